"""The gated form of a landing page: who you are, a mainland mobile number, and consent."""

from __future__ import annotations

from typing import Any

from django import forms
from django.utils.translation import gettext_lazy as _

from content.models import ConsentText
from leads.identity import IdentityError, normalize_phone


class LandingForm(forms.Form):
    name = forms.CharField(label=_("Your name"), max_length=64)
    phone = forms.CharField(
        label=_("Mobile number"),
        max_length=32,
        widget=forms.TextInput(
            attrs={"inputmode": "tel", "autocomplete": "tel", "placeholder": "138 0013 8000"}
        ),
    )
    company = forms.CharField(label=_("Company"), max_length=200)
    title = forms.CharField(label=_("Job title"), max_length=128, required=False)
    consent = forms.BooleanField(
        label=_("I agree to be contacted about this content"),
        error_messages={"required": _("Please agree to the terms to download.")},
    )
    consent_version = forms.CharField(widget=forms.HiddenInput)

    def __init__(self, *args: Any, consent_text: ConsentText | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.consent_text = consent_text
        if consent_text is not None:
            self.fields["consent_version"].initial = consent_text.version

    def clean_phone(self) -> str:
        try:
            return normalize_phone(self.cleaned_data["phone"])
        except IdentityError as exc:
            raise forms.ValidationError(_("Please enter a valid mainland mobile number.")) from exc

    def clean_consent_version(self) -> str:
        version = self.cleaned_data["consent_version"]
        if self.consent_text is None or version != self.consent_text.version:
            # The page was rendered with a consent text that is no longer in use: show the new one.
            raise forms.ValidationError(_("The terms have changed: please read and agree again."))
        return version

    def person(self) -> dict[str, str]:
        return {key: self.cleaned_data[key].strip() for key in ("name", "phone", "company", "title")}
