"""Which adapter serves which channel: `NURTURE_CHANNEL_ADAPTERS` in settings (dotted paths)."""

from __future__ import annotations

from functools import cache

from django.conf import settings
from django.utils.module_loading import import_string

from channels.adapters.base import Adapter


@cache
def _adapter(path: str) -> Adapter:
    return import_string(path)()


def adapter_for(channel: str) -> Adapter | None:
    """The adapter of a channel, or None when the channel has none or its settings are missing."""
    path = settings.NURTURE_CHANNEL_ADAPTERS.get(channel)
    if not path:
        return None
    adapter = _adapter(path)
    return adapter if adapter.configured() else None


def adapters_reset() -> None:
    """Forget the adapter instances (tests that change the settings)."""
    _adapter.cache_clear()
