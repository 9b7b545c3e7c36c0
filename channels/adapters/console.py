"""The `console` channel: always available; a send is written to the log and kept on the touch (the
demo shows it in the UI). Sending the same idempotency key twice records it once."""

from __future__ import annotations

import logging

from channels.adapters.base import BaseAdapter, OutgoingMessage, SendResult, SendStatus

logger = logging.getLogger("nurture.console")


class ConsoleAdapter(BaseAdapter):
    channel = "console"
    honours_idempotency_key = True  # it keeps nothing but the log line and the touch itself

    def send(self, message: OutgoingMessage) -> SendResult:
        logger.info(
            "console %s touch %s to lead %s (%s): %s",
            message.channel,
            message.idempotency_key,
            message.lead_id,
            message.lead.get("name", ""),
            message.text,
        )
        return SendResult(status=SendStatus.SENT, provider_ref=f"console:{message.idempotency_key}")


class NoopAdapter(BaseAdapter):
    """Accepts everything and does nothing: what `bench dispatch` measures the engine with."""

    channel = "noop"
    honours_idempotency_key = True

    def send(self, message: OutgoingMessage) -> SendResult:
        return SendResult(status=SendStatus.SENT, provider_ref=message.idempotency_key)
