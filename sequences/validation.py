"""Validating a sequence and its steps as plain values (API, admin, `sequence_save`): every bad field
is named by its path, as the rule language names a bad node."""

from __future__ import annotations

import re
from collections.abc import Sequence as Seq
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.conf import settings

from leads.models import Pool, Stage
from leads.rules import RuleError, rule_validate
from sequences.models import Channel, StepMode, TriggerType
from sequences.scheduling import QuietHours

EXIT_STAGES = {s.value for s in Stage}


class SequenceError(ValueError):
    """A sequence or step that does not validate; `errors` maps a field path to its message."""

    def __init__(self, errors: dict[str, str]) -> None:
        super().__init__("; ".join(f"{k}: {v}" for k, v in errors.items()))
        self.errors = errors


# --- Validation and saving.


def _check_rule(rule: Any, path: str, errors: dict[str, str]) -> None:
    if rule is None:
        return
    try:
        rule_validate(rule)
    except RuleError as exc:
        errors[path] = str(exc)


def sequence_check(*, data: dict[str, Any], steps: Seq[dict[str, Any]]) -> None:
    """Validate a sequence and its steps as plain values; SequenceError names every bad field."""
    errors: dict[str, str] = {}
    trigger = data.get("trigger") or {"type": "manual"}
    kind = trigger.get("type") if isinstance(trigger, dict) else None
    if kind not in TriggerType.values:
        errors["trigger.type"] = f"must be one of {', '.join(TriggerType.values)}"
    elif kind == TriggerType.POOL_ENTERED and not Pool.objects.filter(slug=trigger.get("pool")).exists():
        errors["trigger.pool"] = f"no pool {trigger.get('pool')!r}"
    elif kind == TriggerType.SILENT and not (isinstance(trigger.get("days"), int) and trigger["days"] > 0):
        errors["trigger.days"] = "must be a positive integer"
    elif kind == TriggerType.TAG_ADDED and not str(trigger.get("tag") or "").strip():
        errors["trigger.tag"] = "required"
    elif kind == TriggerType.EVENT and not str(trigger.get("event") or "").strip():
        errors["trigger.event"] = "required"
    elif kind == TriggerType.STAGE_CHANGED and trigger.get("stage") not in EXIT_STAGES:
        errors["trigger.stage"] = f"must be one of {', '.join(sorted(EXIT_STAGES))}"
    if kind == TriggerType.EVENT and trigger.get("where") is not None:
        _check_rule(
            {"event": trigger.get("event") or "x", "where": trigger["where"]}, "trigger.where", errors
        )
    _check_rule(data.get("entry_rule"), "entry_rule", errors)
    _check_rule(data.get("exit_rule"), "exit_rule", errors)
    for stage in data.get("exit_stages") or []:
        if stage not in EXIT_STAGES:
            errors["exit_stages"] = f"{stage!r} is not a stage"
    reentry = data.get("reentry", "never")
    if not (
        reentry in ("never", "always")
        or (
            isinstance(reentry, dict)
            and isinstance(reentry.get("after_days"), int)
            and reentry["after_days"] > 0
        )
    ):
        errors["reentry"] = 'must be "never", "always" or {"after_days": N}'
    try:
        ZoneInfo(str(data.get("timezone") or settings.TIME_ZONE))
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder such as "Asia"
        errors["timezone"] = f"unknown time zone {data.get('timezone')!r}"
    quiet = data.get("quiet_hours")
    if quiet:
        try:
            QuietHours.parse(quiet)
        except (KeyError, TypeError, ValueError) as exc:
            errors["quiet_hours"] = f'must be {{"start": "HH:MM", "end": "HH:MM"}} ({exc})'
    for name, value in (data.get("caps") or {}).items():
        if not isinstance(value, int) or value < 1:
            errors[f"caps.{name}"] = "must be a positive integer"
    positions = [int(s.get("position", i)) for i, s in enumerate(steps)]
    if len(set(positions)) != len(positions):
        errors["steps"] = "two steps have the same position"
    for i, step in enumerate(steps):
        path = f"steps[{i}]"
        day = step.get("day")
        if not isinstance(day, int) or day < 0 or day > 3660:
            errors[f"{path}.day"] = "must be an integer from 0 to 3660"
        if step.get("channel", "console") not in Channel.values:
            errors[f"{path}.channel"] = f"must be one of {', '.join(Channel.values)}"
        if step.get("else_channel") and step["else_channel"] not in Channel.values:
            errors[f"{path}.else_channel"] = f"must be one of {', '.join(Channel.values)}"
        if step.get("mode", "auto") not in StepMode.values:
            errors[f"{path}.mode"] = "must be auto or task"
        _check_rule(step.get("condition"), f"{path}.condition", errors)
        position = positions[i]
        else_position = step.get("else_position")
        if else_position is not None and (else_position not in positions or else_position <= position):
            errors[f"{path}.else_position"] = "must be the position of a later step"
        wait = step.get("wait_for")
        if wait is not None:
            if not isinstance(wait, dict) or not wait.get("event"):
                errors[f"{path}.wait_for"] = 'must be {"event": type, "within_days": N, …}'
            else:
                _check_rule(_wait_rule(wait), f"{path}.wait_for", errors)
                for key in ("then", "else"):
                    target = wait.get(key)
                    if target is not None and (target not in positions or target <= position):
                        errors[f"{path}.wait_for.{key}"] = "must be the position of a later step"
        text = step.get("text") or ""
        if text:
            from content.templating import TemplateRefused, template_check

            try:
                template_check(text)
            except TemplateRefused as exc:
                errors[f"{path}.text"] = str(exc)
        if step.get("channel") == Channel.WECOM_MOMENT:
            # One moment is seen by every lead due that day: nothing in it may be one lead's.
            if _PER_LEAD.search(text):
                errors[f"{path}.text"] = (
                    "a moment is one post for many leads: no {{ lead.… }} or {{ link }} in it "
                    "(the content's page is attached)"
                )
            if step.get("recommended") or step.get("content") == "recommended":
                errors[f"{path}.content"] = (
                    "a moment cannot carry each lead's recommended content: pick an asset"
                )
    if errors:
        raise SequenceError(errors)


# A variable or tag of a template that names a lead's field or its tracked link.
_PER_LEAD = re.compile(r"\{[{%][^}]*\b(?:lead\b|link\b)")


def _wait_rule(wait: dict[str, Any]) -> dict[str, Any]:
    """`wait_for` as a rule of the rule language: the event happened within the last N days."""
    rule: dict[str, Any] = {"event": wait["event"], "within_days": int(wait.get("within_days") or 1)}
    if wait.get("where"):
        rule["where"] = wait["where"]
    return rule
