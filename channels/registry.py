"""Which adapter serves which channel: `NURTURE_CHANNEL_ADAPTERS` in settings (dotted paths)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from channels.adapters.base import Adapter

logger = logging.getLogger(__name__)


@cache
def _adapter(path: str) -> Adapter | None:
    try:
        return import_string(path)()
    except Exception:  # a broken path or adapter makes its channel "not configured", never a crash
        logger.exception("channel adapter %s cannot be loaded", path)
        return None


def adapter_for(channel: str) -> Adapter | None:
    """The adapter of a channel, or None when the channel has none or its settings are missing."""
    path = settings.NURTURE_CHANNEL_ADAPTERS.get(channel)
    if not path:
        return None
    adapter = _adapter(path)
    return adapter if adapter is not None and adapter.configured() else None


@dataclass(frozen=True)
class ChannelStatus:
    channel: str
    adapter: str
    configured: bool
    missing: tuple[str, ...]
    error: str = ""


def channels_status(channels: list[str]) -> list[ChannelStatus]:
    """What the admin shows per channel: its adapter, and the settings still missing."""
    rows = []
    for channel in channels:
        path = settings.NURTURE_CHANNEL_ADAPTERS.get(channel, "")
        adapter = _adapter(path) if path else None
        if not path:
            rows.append(ChannelStatus(channel, "", False, (), "no adapter"))
        elif adapter is None:
            rows.append(ChannelStatus(channel, path, False, (), "cannot be loaded (see the log)"))
        else:
            missing = tuple(adapter.missing_settings())
            rows.append(ChannelStatus(channel, path, not missing, missing))
    return rows


def adapters_reset() -> None:
    """Forget the adapter instances (tests that change the settings)."""
    _adapter.cache_clear()
