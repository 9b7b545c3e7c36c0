import pytest


@pytest.fixture(autouse=True)
def private_media(settings, tmp_path):
    """Uploads and asset files in this test's own directories, apart from each other as in production."""
    settings.MEDIA_ROOT = tmp_path / "media"
    settings.NURTURE_PRIVATE_MEDIA_ROOT = tmp_path / "private"
    return settings.NURTURE_PRIVATE_MEDIA_ROOT
