"""Where asset files live: outside MEDIA_ROOT and without a URL, so a gated whitepaper cannot be fetched
past its form; the content views are the only way out (`/p/<slug>/file/`, a valid form submission)."""

from __future__ import annotations

import os

from django.conf import settings
from django.core.files.storage import FileSystemStorage


class PrivateAssetStorage(FileSystemStorage):
    """A FileSystemStorage under NURTURE_PRIVATE_MEDIA_ROOT (read on every use, so a test's override
    applies) whose `url()` raises ValueError: there is no public base URL to fall back to MEDIA_URL."""

    @property  # type: ignore[override]
    def base_location(self) -> str:
        return str(settings.NURTURE_PRIVATE_MEDIA_ROOT)

    @property  # type: ignore[override]
    def location(self) -> str:
        return os.path.abspath(self.base_location)

    @property  # type: ignore[override]
    def base_url(self) -> None:
        return None


_ASSET_STORAGE = PrivateAssetStorage()


def asset_storage() -> PrivateAssetStorage:
    """The storage of `ContentAsset.file`, as a callable so the migration names this function."""
    return _ASSET_STORAGE
