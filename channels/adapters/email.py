"""The `email` channel through Django's email backend (EMAIL_BACKEND: SMTP, or any anymail provider).

Each touch is one multipart/alternative message (text, and simple HTML with the content link), with a
`List-Unsubscribe` one-click link (RFC 8058) and a Message-ID derived from the touch's idempotency key,
which bounces name. SMTP does not deduplicate, so results are recorded as soon as each send returns.
"""

from __future__ import annotations

import smtplib
from datetime import datetime

from django.conf import settings
from django.core.mail import EmailMultiAlternatives, get_connection
from django.utils.html import escape, linebreaks
from django.utils.translation import gettext as _

from channels.adapters.base import (
    BaseAdapter,
    OutgoingMessage,
    PermanentError,
    PolicyVerdict,
    RetryableError,
    SendResult,
    SendStatus,
)

SUBJECT_MAX = 78


def email_subject(message: OutgoingMessage) -> str:
    """The content's title, else EMAIL_SUBJECT, else the text's first line."""
    subject = message.content_title or settings.EMAIL_SUBJECT
    if not subject:
        subject = (message.text.strip().splitlines() or [""])[0] or settings.NURTURE_SITE_NAME
    subject = " ".join(str(subject).split())
    return subject if len(subject) <= SUBJECT_MAX else subject[: SUBJECT_MAX - 1] + "…"


def email_bodies(message: OutgoingMessage, *, unsubscribe: str) -> tuple[str, str]:
    """(text, html) of a touch: the rendered text, its content link, and the unsubscribe link."""
    text = message.text.strip()
    link = message.link
    footer = _("Unsubscribe")
    plain = text
    if link and link not in text:
        plain = f"{plain}\n\n{link}"
    plain = f"{plain}\n\n--\n{footer}: {unsubscribe}\n"
    paragraphs = linebreaks(escape(text))
    if link:
        label = escape(message.content_title or link)
        paragraphs += f'\n<p><a href="{escape(link)}">{label}</a></p>'
    html = (
        '<!doctype html><html><head><meta charset="utf-8"></head>'
        '<body style="font-family:sans-serif;line-height:1.6;max-width:36rem">'
        f"{paragraphs}"
        '<hr><p style="font-size:12px;color:#52606d">'
        f'<a href="{escape(unsubscribe)}">{escape(footer)}</a></p>'
        "</body></html>"
    )
    return plain, html


class EmailAdapter(BaseAdapter):
    """One email per touch; needs EMAIL_FROM and the lead's address."""

    channel = "email"
    honours_idempotency_key = False
    required_settings = ("EMAIL_FROM",)

    def rate_key(self) -> str:
        return f"email:{settings.EMAIL_BACKEND}:{settings.EMAIL_HOST}"

    def policy_check(self, message: OutgoingMessage, now: datetime) -> PolicyVerdict:
        if not (message.lead.get("email") or "").strip():
            return PolicyVerdict(False, "no_email")
        return PolicyVerdict(True)

    def build(self, message: OutgoingMessage) -> EmailMultiAlternatives:
        """The message for one touch (not sent)."""
        from channels.email import email_message_id, unsubscribe_url

        unsubscribe = unsubscribe_url(lead_id=message.lead_id, channel="email")
        plain, html = email_bodies(message, unsubscribe=unsubscribe)
        email = EmailMultiAlternatives(
            subject=email_subject(message),
            body=plain,
            from_email=settings.DEFAULT_FROM_EMAIL,
            to=[message.lead["email"]],
            headers={
                "Message-ID": email_message_id(idempotency_key=message.idempotency_key),
                "List-Unsubscribe": f"<{unsubscribe}>",
                "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
            },
        )
        email.attach_alternative(html, "text/html")
        return email

    def send(self, message: OutgoingMessage) -> SendResult:
        if not (message.lead.get("email") or "").strip():
            raise PermanentError("the lead has no email address", code="no_email")
        email = self.build(message)
        try:
            email.connection = get_connection(fail_silently=False)
            sent = email.send(fail_silently=False)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _msg in exc.recipients.values()]
            if codes and all(400 <= code < 500 for code in codes):
                raise RetryableError(f"recipient deferred: {exc.recipients}") from exc
            raise PermanentError(f"recipient refused: {exc.recipients}", code="recipient_refused") from exc
        except smtplib.SMTPResponseException as exc:
            if 400 <= exc.smtp_code < 500:
                raise RetryableError(f"smtp {exc.smtp_code}: {exc.smtp_error!r}") from exc
            raise PermanentError(
                f"smtp {exc.smtp_code}: {exc.smtp_error!r}", code=f"smtp_{exc.smtp_code}"
            ) from exc
        except (TimeoutError, smtplib.SMTPException, OSError) as exc:  # disconnected, refused, timeout
            raise RetryableError(f"smtp: {exc.__class__.__name__}: {exc}") from exc
        except Exception as exc:
            typed = _anymail_error(exc)
            if typed is exc:
                raise
            raise typed from exc
        if not sent:
            raise RetryableError("the email backend sent nothing")
        # An anymail backend knows the provider's id (what its tracking webhooks name); SMTP: the Message-ID.
        esp_id = getattr(getattr(email, "anymail_status", None), "message_id", None)
        ref = email.extra_headers["Message-ID"] if esp_id in (None, "") else esp_id
        return SendResult(status=SendStatus.SENT, provider_ref=str(ref))


def _anymail_error(exc: Exception) -> Exception:
    """An anymail provider's error as a typed one: refused recipients are permanent, outages retry."""
    try:
        from anymail.exceptions import AnymailError, AnymailRecipientsRefused
    except ImportError:  # pragma: no cover
        return exc
    if isinstance(exc, AnymailRecipientsRefused):
        return PermanentError(str(exc)[:500], code="recipient_refused")
    if isinstance(exc, AnymailError):
        status = getattr(exc, "status_code", None)
        if status is None or status >= 500 or status == 429:
            return RetryableError(str(exc)[:500])
        return PermanentError(str(exc)[:500], code=f"anymail_{status}")
    return exc
