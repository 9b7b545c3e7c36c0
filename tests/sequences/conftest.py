import pytest

from channels.registry import adapters_reset
from tests.sequences.recording import recording_reset

RECORDING = "tests.sequences.recording.RecordingAdapter"


@pytest.fixture
def recording(settings):
    """Every channel the tests use goes through the recording adapter."""
    settings.NURTURE_CHANNEL_ADAPTERS = {
        "console": RECORDING,
        "sms": RECORDING,
        "wecom": RECORDING,
        "email": RECORDING,
        "call": RECORDING,
    }
    adapters_reset()
    recording_reset()
    yield
    adapters_reset()
    recording_reset()
