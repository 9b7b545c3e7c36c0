"""Fields of the sequence API: the JSON parts of a sequence (trigger, rules, re-entry, quiet hours,
completion, wait_for) checked for their shape before `sequence_check` reads them, and DRF's nested
errors as field paths."""

from __future__ import annotations

import re
from functools import cache
from typing import Any
from zoneinfo import available_timezones

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers
from rest_framework.exceptions import ValidationError

from leads.models import Temperature
from sequences.models import SequenceStatus, TriggerType
from sequences.scheduling import parse_hhmm

MAX_ENROLL = 10_000
MAX_STEPS = 200
MAX_POSITION = 10_000
MAX_DAYS = 3660  # ten years: every day count of a sequence stays within datetime's range
MAX_ID = 2**63 - 1
HHMM = re.compile(r"^\d{1,2}:\d{2}$")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")  # PostgreSQL stores neither in text or JSON


# --- Errors as field paths.


def error_paths(detail: Any, path: str = "") -> dict[str, list[str]]:
    """DRF's nested error detail flattened to {field path: messages}: `steps[2].day`, `caps.sms`."""
    out: dict[str, list[str]] = {}

    def add(key: str, messages: list[str]) -> None:
        out.setdefault(key or "non_field_errors", []).extend(messages)

    if isinstance(detail, dict):
        for key, value in detail.items():
            if isinstance(key, int):
                sub = f"{path}[{key}]"
            elif key == "non_field_errors" and path:
                sub = path
            else:
                sub = f"{path}.{key}" if path else str(key)
            for inner, messages in error_paths(value, sub).items():
                add(inner, messages)
    elif isinstance(detail, list) and all(isinstance(item, str) for item in detail):
        if detail:
            add(path, [str(item) for item in detail])
    elif isinstance(detail, list):
        for index, item in enumerate(detail):
            for inner, messages in error_paths(item, f"{path}[{index}]").items():
                add(inner, messages)
    else:
        add(path, [str(detail)])
    return out


def _storable(value: Any) -> bool:
    stack = [value]
    while stack:  # no recursion: any depth the JSON parser accepted is fine here
        item = stack.pop()
        if isinstance(item, str):
            if _UNSTORABLE.search(item):
                return False
        elif isinstance(item, dict):
            stack.extend(item.keys())
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return True


def _is(value: Any, kind: type) -> bool:
    return isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))


def _day_count(value: Any) -> bool:
    return _is(value, int) and 1 <= value <= MAX_DAYS


# --- Fields.


class JsonField(serializers.JSONField):
    """JSON that PostgreSQL can store."""

    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if not _storable(value):
            raise ValidationError("NUL and lone surrogate characters are not allowed")
        return value


@extend_schema_field(
    {"type": "object", "additionalProperties": True, "nullable": True, "description": "DESIGN.md's rule"}
)
class RuleField(JsonField):
    """A rule of the rule language; `sequence_check` validates it."""


@extend_schema_field(
    {
        "type": "object",
        "description": '{"type": "manual"} | {"type": "wecom_added"} | {"type": "pool_entered", '
        '"pool": slug} | {"type": "silent", "days": N} | {"type": "tag_added", "tag": name} | '
        '{"type": "event", "event": type, "where": {}} | {"type": "stage_changed", "stage": stage}',
        "properties": {"type": {"type": "string", "enum": list(TriggerType.values)}},
        "required": ["type"],
        "additionalProperties": True,
    }
)
class TriggerField(JsonField):
    KEYS: dict[str, tuple[type, str]] = {
        "type": (str, "a string"),
        "pool": (str, "a pool slug"),
        "tag": (str, "a tag name"),
        "event": (str, "an event type"),
        "stage": (str, "a stage"),
        "where": (dict, "an object of property: value"),
        "exit_on_leave": (bool, "true or false"),
    }

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise ValidationError('must be an object such as {"type": "manual"}')
        errors = {
            key: f"must be {name}"
            for key, (kind, name) in self.KEYS.items()
            if key in value and not _is(value[key], kind)
        }
        if "days" in value and not _day_count(value["days"]):
            errors["days"] = f"must be an integer from 1 to {MAX_DAYS}"
        if errors:
            raise ValidationError(errors)
        return value


@extend_schema_field(
    {
        "oneOf": [
            {"type": "string", "enum": ["never", "always"]},
            {
                "type": "object",
                "properties": {"after_days": {"type": "integer", "minimum": 1, "maximum": MAX_DAYS}},
                "required": ["after_days"],
            },
        ]
    }
)
class ReentryField(JsonField):
    def to_internal_value(self, data: Any) -> Any:
        value = super().to_internal_value(data)
        if value in ("never", "always") and isinstance(value, str):
            return value
        if isinstance(value, dict) and set(value) == {"after_days"} and _day_count(value["after_days"]):
            return value
        raise ValidationError(f'must be "never", "always" or {{"after_days": N}} with N from 1 to {MAX_DAYS}')


def _hhmm_ok(value: Any) -> bool:
    if not isinstance(value, str) or not HHMM.match(value):
        return False
    try:
        parse_hhmm(value)
    except ValueError:
        return False
    return True


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "properties": {
            "start": {"type": "string", "example": "21:00"},
            "end": {"type": "string", "example": "08:00"},
        },
        "required": ["start", "end"],
        "description": "local times HH:MM; null: no quiet hours",
    }
)
class QuietHoursField(JsonField):
    def to_internal_value(self, data: Any) -> dict[str, str]:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise ValidationError('must be {"start": "HH:MM", "end": "HH:MM"} or null')
        errors = {
            key: "must be a time of day HH:MM" for key in ("start", "end") if not _hhmm_ok(value.get(key))
        }
        errors.update({key: "unknown key" for key in value if key not in ("start", "end")})
        if errors:
            raise ValidationError(errors)
        return {"start": value["start"], "end": value["end"]}


ON_COMPLETE_ACTIONS = ("assign_sdr", "enroll", "tag")


@extend_schema_field(
    {
        "type": "object",
        "description": 'per temperature: {"hot": {"action": "assign_sdr"}, "warm": {"action": "enroll", '
        '"sequence": id}, "cold": {"action": "tag", "tag": name}}',
        "additionalProperties": {
            "type": "object",
            "properties": {"action": {"type": "string", "enum": list(ON_COMPLETE_ACTIONS)}},
            "required": ["action"],
        },
    }
)
class OnCompleteField(JsonField):
    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise ValidationError("must be an object: temperature → action")
        errors: dict[str, str] = {}
        for temperature, item in value.items():
            if temperature not in Temperature.values:
                errors[temperature] = f"not a temperature ({', '.join(Temperature.values)})"
            elif not isinstance(item, dict) or item.get("action") not in ON_COMPLETE_ACTIONS:
                errors[f"{temperature}.action"] = f"must be one of {', '.join(ON_COMPLETE_ACTIONS)}"
            elif item["action"] == "enroll" and not (
                _is(item.get("sequence"), int) and 0 < item["sequence"] <= MAX_ID
            ):
                errors[f"{temperature}.sequence"] = "must be a sequence id"
            elif item["action"] == "tag" and not (_is(item.get("tag"), str) and item["tag"].strip()):
                errors[f"{temperature}.tag"] = "must be a tag name"
        if errors:
            raise ValidationError(errors)
        return value


@extend_schema_field(
    {
        "type": "object",
        "nullable": True,
        "description": '{"event": type, "where": {}, "within_days": N, "then": position | null, '
        '"else": position | null}',
        "properties": {
            "event": {"type": "string"},
            "within_days": {"type": "integer", "minimum": 1, "maximum": MAX_DAYS},
            "then": {"type": "integer", "nullable": True},
            "else": {"type": "integer", "nullable": True},
        },
        "required": ["event"],
    }
)
class WaitForField(JsonField):
    def to_internal_value(self, data: Any) -> dict[str, Any]:
        value = super().to_internal_value(data)
        if not isinstance(value, dict):
            raise ValidationError('must be {"event": type, "within_days": N, …} or null')
        errors: dict[str, str] = {}
        if not (_is(value.get("event"), str) and value["event"].strip()):
            errors["event"] = "must be an event type"
        if value.get("within_days") is not None and not _day_count(value["within_days"]):
            errors["within_days"] = f"must be an integer from 1 to {MAX_DAYS}"
        if value.get("where") is not None and not isinstance(value["where"], dict):
            errors["where"] = "must be an object of property: value"
        for key in ("then", "else"):
            target = value.get(key)
            if target is not None and not (_is(target, int) and 0 <= target <= MAX_POSITION):
                errors[key] = "must be the position of a later step, or null"
        if errors:
            raise ValidationError(errors)
        return value


@extend_schema_field({"type": "string", "nullable": True, "example": "10:00"})
class SendTimeField(serializers.Field):
    """A local time of day "HH:MM"; null: at once on day 0, the anchor's time of day later on."""

    def to_internal_value(self, data: Any) -> str:
        if not _hhmm_ok(data):
            raise ValidationError("must be a time of day HH:MM, or null")
        return data

    def to_representation(self, value: Any) -> str:
        return value.strftime("%H:%M")


@extend_schema_field(
    {
        "oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "enum": ["recommended"]}],
        "nullable": True,
        "description": 'a content asset id, "recommended" (the next best content for each lead) or null',
    }
)
class StepContentField(serializers.Field):
    """`content` as the API speaks it, `content_id` and `recommended` as the step stores it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", **kwargs)

    def to_internal_value(self, data: Any) -> dict[str, Any]:
        if data is None:
            return {"content_id": None, "recommended": False}
        if data == "recommended":
            return {"content_id": None, "recommended": True}
        if _is(data, int) and 0 < data <= MAX_ID:
            return {"content_id": data, "recommended": False}
        raise ValidationError('must be a content asset id, "recommended" or null')

    def to_representation(self, step: Any) -> int | str | None:
        return "recommended" if step.recommended else step.content_id


@extend_schema_field({"type": "boolean", "description": "status active (true) or not (false)"})
class ActiveField(serializers.BooleanField):
    def __init__(self, **kwargs: Any) -> None:
        super().__init__(source="*", **kwargs)

    def to_internal_value(self, data: Any) -> dict[str, bool]:
        return {"active": super().to_internal_value(data)}

    def to_representation(self, sequence: Any) -> bool:
        return sequence.status == SequenceStatus.ACTIVE


@cache
def known_time_zones() -> frozenset[str]:
    return frozenset(available_timezones())
