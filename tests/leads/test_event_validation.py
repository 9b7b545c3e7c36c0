"""The fast path of event validation agrees with DRF's validation on every event it takes."""

from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st
from rest_framework.exceptions import ValidationError

from leads.api.serializers import EventWriteSerializer

REFUSED = object()

texts = st.one_of(
    st.text(max_size=140),
    st.sampled_from(
        ["", "   ", " page_view ", "a\x00b", "\ud800x", "x" * 64, "x" * 65, "a b", "中文", "ev-1\n"]
    ),
)
instants = st.datetimes(
    min_value=datetime(1900, 1, 1), max_value=datetime(2200, 1, 1), timezones=st.none() | st.just(UTC)
).map(lambda at: at.isoformat())
offsets = st.builds(
    lambda at, minutes: at.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat(),
    st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1)),
    st.integers(-23 * 60, 23 * 60),
)
values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 2**64),
    st.floats(allow_nan=False),
    texts,
    instants,
    offsets,
    st.sampled_from(["2026-01-02T03:04:05+08:00", "2026-13-01T00:00:00Z", "2026-01-02 03:04:05", "123"]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), texts, st.none()), max_size=3),
    st.just({"phone": "13800138000"}),
)
fields = ["event_id", "lead", "type", "occurred_at", "properties", "source", "unknown"]
events = st.dictionaries(st.sampled_from(fields), values, max_size=7)
plain = st.fixed_dictionaries(
    {"lead": st.integers(1, 10**6), "type": st.sampled_from(["page_view", " content_viewed", "a.b:c-d_e"])},
    optional={
        "event_id": texts | st.none(),
        "occurred_at": offsets | instants,
        "source": texts,
        "properties": values,
    },
)


def _drf(serializer: EventWriteSerializer, entry: dict) -> object:
    try:
        return dict(serializer.run_validation(entry))
    except ValidationError:
        return REFUSED


@settings(max_examples=400, deadline=None)
@given(entry=st.one_of(events, plain))
def test_fast_path_matches_drf_whenever_it_answers(entry):
    serializer = EventWriteSerializer()
    fast = serializer.validated_if_plain(entry)
    if fast is not None:
        assert fast == _drf(serializer, entry)


def test_a_plain_event_takes_the_fast_path():
    entry = {
        "event_id": " ev-1 ",
        "lead": 42,
        "type": "content_viewed",
        "occurred_at": "2026-01-02T03:04:05+00:00",
        "properties": {"url": "https://example.com/"},
    }
    serializer = EventWriteSerializer()
    fast = serializer.validated_if_plain(entry)
    assert fast is not None and fast == _drf(serializer, entry)
    assert fast["event_id"] == "ev-1" and fast["source"] == ""


def test_bad_or_unusual_events_are_left_to_drf():
    serializer = EventWriteSerializer()
    for entry in (
        {"lead": True, "type": "x"},
        {"lead": "42", "type": "x"},
        {"lead": {"phone": "13800138000"}, "type": "x"},
        {"lead": 1, "type": "bad type"},
        {"lead": 1, "type": "x", "properties": None},
        {"lead": 1, "type": "x", "properties": {"a": "\x00"}},
        {"lead": 1, "type": "x", "occurred_at": "yesterday"},
        {"lead": 1, "type": "x", "event_id": 7},
    ):
        assert serializer.validated_if_plain(entry) is None, entry
