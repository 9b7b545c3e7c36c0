"""The rule language (DESIGN.md): validation with the path of a bad node, and one compiler to a `Q`.

Pools, step conditions, exits, auto-tags and scoring predicates are written in this JSON language.
`rule_compile` turns a rule into one Django `Q` (with `Exists` subqueries for tags and events), so a
rule is one SQL `WHERE` over all leads; `rule_matches` asks the same question of one lead through the
same compiler, so there is no second interpreter to drift from it.

    {"all": [...]}  {"any": [...]}  {"not": {...}}
    {"field": "industry", "op": "in", "value": ["制造", "信息科技"]}
    {"field": "properties.buying_plan", "op": "is_set", "value": true}
    {"tag": "need:全渠道获客", "count_gte": 1}       {"tag": "need:*"}  (any tag of the group "need")
    {"event": "content_viewed", "within_days": 30, "count_gte": 2, "where": {"form": "whitepaper"}}
    {"days_since": "last_inbound_at", "gte": 14}
    {"score_gte": 60}   {"bant_gte": 3}   {"pool": "mql"}
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Case, Exists, IntegerField, OuterRef, Q, QuerySet, Value, When
from django.db.models.lookups import GreaterThanOrEqual

from leads.models import Event, Lead, LeadTag, Tag

FIELD_OPS = frozenset({"eq", "ne", "in", "gt", "gte", "lt", "lte", "is_set", "contains"})
TEXT_FIELDS = frozenset(
    {
        "name",
        "company",
        "title",
        "industry",
        "company_size",
        "source",
        "stage",
        "temperature",
        "external_id",
        "phone",
        "email",
        "wecom_external_userid",
        "wechat_unionid",
        "consent_version",
    }
)
NUMBER_FIELDS = frozenset({"score"})
BOOLEAN_FIELDS = frozenset(
    {"consent", "do_not_contact", "bant_budget", "bant_authority", "bant_need", "bant_timeline"}
)
DATE_FIELDS = frozenset({"created_at", "updated_at", "last_inbound_at", "last_event_at", "consent_at"})
RULE_FIELDS = TEXT_FIELDS | NUMBER_FIELDS | BOOLEAN_FIELDS | DATE_FIELDS
DAYS_OPS = ("gte", "gt", "lte", "lt")
# Property keys and event `where` keys become ORM lookups: keep them plain names.
# ("__" would be read as a lookup separator).
_KEY = re.compile(r"^(?!.*__)[A-Za-z_][A-Za-z0-9_]{0,63}$")
_SLUG = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_NODE_KEYS = {
    "all": {"all"},
    "any": {"any"},
    "not": {"not"},
    "field": {"field", "op", "value"},
    "tag": {"tag", "count_gte"},
    "event": {"event", "within_days", "count_gte", "where"},
    "days_since": {"days_since", *DAYS_OPS},
    "score_gte": {"score_gte"},
    "bant_gte": {"bant_gte"},
    "pool": {"pool"},
}
MAX_DEPTH = 12

# The pools issue registers how a `pool` node compiles (membership of another pool).
PoolCompiler = Callable[[str, datetime], Q]
_pool_compiler: PoolCompiler | None = None


class RuleError(ValueError):
    """A rule that does not validate; the message starts with the path of the bad node."""

    def __init__(self, path: str, message: str) -> None:
        self.path = path or "rule"
        self.message = message
        super().__init__(f"{self.path}: {message}")


def rule_register_pool_compiler(compiler: PoolCompiler) -> None:
    global _pool_compiler
    _pool_compiler = compiler


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _kind(node: dict[str, Any], path: str) -> str:
    kinds = [key for key in _NODE_KEYS if key in node]
    if len(kinds) != 1:
        known = ", ".join(_NODE_KEYS)
        raise RuleError(path, f"a node has exactly one of: {known}")
    kind = kinds[0]
    unknown = set(node) - _NODE_KEYS[kind]
    if unknown:
        raise RuleError(_join(path, sorted(unknown)[0]), f"unknown key in a '{kind}' node")
    return kind


def _positive_int(value: Any, path: str, *, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        kind = "a positive integer" if minimum == 1 else f"an integer ≥ {minimum}"
        raise RuleError(path, f"must be {kind}")
    return value


def _scalar(value: Any, path: str) -> None:
    if not (value is None or isinstance(value, str | int | float | bool)):
        raise RuleError(path, "must be a string, number, boolean or null")
    if isinstance(value, str) and "\x00" in value:
        raise RuleError(path, "must not contain NUL characters")


def _field_name(name: Any, path: str) -> str:
    if not isinstance(name, str):
        raise RuleError(path, "must be a field name")
    if name.startswith("properties."):
        key = name.removeprefix("properties.")
        if not _KEY.match(key):
            raise RuleError(path, "a property key is letters, digits and single underscores")
        return name
    if name not in RULE_FIELDS:
        raise RuleError(
            path, f"unknown field '{name}' (fields: {', '.join(sorted(RULE_FIELDS))}, properties.<key>)"
        )
    return name


def rule_validate(rule: Any, path: str = "", *, depth: int = 0) -> None:
    """Raise RuleError naming the path of the first bad node (e.g. `all[2].within_days`)."""
    if depth > MAX_DEPTH:
        raise RuleError(path, f"rules nest at most {MAX_DEPTH} levels deep")
    if not isinstance(rule, dict):
        raise RuleError(path, "must be an object")
    kind = _kind(rule, path)
    if kind in ("all", "any"):
        children = rule[kind]
        if not isinstance(children, list) or not children:
            raise RuleError(_join(path, kind), "must be a non-empty list of rules")
        for index, child in enumerate(children):
            rule_validate(child, f"{_join(path, kind)}[{index}]", depth=depth + 1)
    elif kind == "not":
        rule_validate(rule["not"], _join(path, "not"), depth=depth + 1)
    elif kind == "field":
        name = _field_name(rule["field"], _join(path, "field"))
        op = rule.get("op")
        if op not in FIELD_OPS:
            raise RuleError(_join(path, "op"), f"must be one of {', '.join(sorted(FIELD_OPS))}")
        if "value" not in rule:
            raise RuleError(_join(path, "value"), "is required")
        value = rule["value"]
        value_path = _join(path, "value")
        if op == "in":
            if not isinstance(value, list) or not value:
                raise RuleError(value_path, "must be a non-empty list")
            for index, item in enumerate(value):
                _scalar(item, f"{value_path}[{index}]")
        elif op == "is_set":
            if not isinstance(value, bool):
                raise RuleError(value_path, "must be true or false")
        elif op == "contains":
            if not isinstance(value, str) or not value:
                raise RuleError(value_path, "must be a non-empty string")
        else:
            _scalar(value, value_path)
            if op in ("gt", "gte", "lt", "lte"):
                if value is None or isinstance(value, bool):
                    raise RuleError(value_path, "must be a number, or a date for date fields")
                if name in DATE_FIELDS and not isinstance(value, str):
                    raise RuleError(value_path, "must be an ISO 8601 date-time")
                if name in NUMBER_FIELDS and not isinstance(value, int | float):
                    raise RuleError(value_path, "must be a number")
    elif kind == "tag":
        if not isinstance(rule["tag"], str) or not rule["tag"].strip():
            raise RuleError(_join(path, "tag"), "must be a tag name")
        if "count_gte" in rule:
            _positive_int(rule["count_gte"], _join(path, "count_gte"))
    elif kind == "event":
        if not isinstance(rule["event"], str) or not rule["event"].strip():
            raise RuleError(_join(path, "event"), "must be an event type")
        for key in ("within_days", "count_gte"):
            if key in rule:
                _positive_int(rule[key], _join(path, key))
        if "where" in rule:
            where = rule["where"]
            if not isinstance(where, dict) or not where:
                raise RuleError(_join(path, "where"), "must be a non-empty object of property: value")
            for key, value in where.items():
                if not _KEY.match(str(key)):
                    raise RuleError(_join(_join(path, "where"), str(key)), "a property key is a plain name")
                _scalar(value, _join(_join(path, "where"), str(key)))
    elif kind == "days_since":
        if rule["days_since"] not in DATE_FIELDS:
            raise RuleError(_join(path, "days_since"), f"must be one of {', '.join(sorted(DATE_FIELDS))}")
        bounds = [key for key in DAYS_OPS if key in rule]
        if not bounds:
            raise RuleError(path, "give gte, gt, lte or lt (days)")
        for key in bounds:
            _positive_int(rule[key], _join(path, key), minimum=0)
    elif kind == "score_gte":
        if isinstance(rule["score_gte"], bool) or not isinstance(rule["score_gte"], int | float):
            raise RuleError(_join(path, "score_gte"), "must be a number")
    elif kind == "bant_gte":
        value = rule["bant_gte"]
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 4:
            raise RuleError(_join(path, "bant_gte"), "must be an integer from 0 to 4")
    elif kind == "pool" and (not isinstance(rule["pool"], str) or not _SLUG.match(rule["pool"])):
        raise RuleError(_join(path, "pool"), "must be a pool slug")


def rule_pools(rule: Any) -> set[str]:
    """The slugs of the pools a (valid) rule refers to, for cycle checks when a pool is saved."""
    if not isinstance(rule, dict):
        return set()
    if "pool" in rule and isinstance(rule["pool"], str):
        return {rule["pool"]}
    found: set[str] = set()
    for key in ("all", "any"):
        for child in rule.get(key) or []:
            found |= rule_pools(child)
    if "not" in rule:
        found |= rule_pools(rule["not"])
    return found


def _field_q(name: str, op: str, value: Any) -> Q:
    if name.startswith("properties."):
        key = name.removeprefix("properties.")
        lookup = f"properties__{key}"
        if op == "is_set":
            present = Q(properties__has_key=key) & ~Q(**{lookup: None}) & ~Q(**{lookup: ""})
            return present if value else ~present
        if op == "contains":
            return Q(properties__has_key=key) & Q(**{f"{lookup}__icontains": value})
        # A missing key compares as SQL NULL, which NOT cannot turn true: say "has the key" first, so
        # that {"not": {"field": "properties.plan", "op": "eq", …}} holds for leads without a plan.
        has_key = Q(properties__has_key=key)
        if op == "ne":
            return ~(has_key & Q(**{lookup: value}))
        if op == "eq":
            return has_key & Q(**{lookup: value})
        if op == "in":
            return has_key & Q(**{f"{lookup}__in": value})
        return has_key & Q(**{f"{lookup}__{op}": value})
    else:
        lookup = name
        if op == "is_set":
            present = ~Q(**{f"{name}__isnull": True})
            if name in TEXT_FIELDS:
                present &= ~Q(**{name: ""})
            return present if value else ~present
        if op == "contains":
            return Q(**{f"{name}__icontains": value})
    if op == "eq":
        return Q(**{lookup: value}) if value is not None else Q(**{f"{lookup}__isnull": True})
    if op == "ne":
        return ~Q(**{lookup: value}) if value is not None else ~Q(**{f"{lookup}__isnull": True})
    if op == "in":
        return Q(**{f"{lookup}__in": value})
    return Q(**{f"{lookup}__{op}": value})


def _event_q(rule: dict[str, Any], now: datetime) -> Q:
    events = Event.objects.filter(lead=OuterRef("pk"), type=rule["event"])
    if "within_days" in rule:
        events = events.filter(
            occurred_at__gte=now - timedelta(days=rule["within_days"]), occurred_at__lte=now
        )
    for key, value in (rule.get("where") or {}).items():
        events = events.filter(**{f"properties__{key}": value})
    count = rule.get("count_gte", 1)
    # EXISTS (… OFFSET n-1 LIMIT 1) holds when at least n events match, and stops at the n-th.
    return Q(Exists(events.order_by().values("pk")[count - 1 : count]))


def _bant_count() -> Any:
    parts = [
        Case(When(**{name: True}, then=Value(1)), default=Value(0), output_field=IntegerField())
        for name in ("bant_budget", "bant_authority", "bant_need", "bant_timeline")
    ]
    return parts[0] + parts[1] + parts[2] + parts[3]


def _known_tag_ids(rule: dict[str, Any]) -> list[int] | None:
    """The ids a tag node means, when the caller looked them up (`rule_tag_ids_known`); else None."""
    from leads.tagging import tag_name_normalize

    known = _TAG_IDS.get()
    if known is None:
        return None
    name = rule["tag"].strip()
    if name.endswith(":*"):
        group = name[:-2].strip()
        return known.by_group.get(group, []) if group in known.groups_asked else None
    name = tag_name_normalize(name)
    return known.by_name.get(name, []) if name in known.names_asked else None


def _lead_tags(count_gte: int) -> QuerySet:
    tags = LeadTag.objects.filter(lead=OuterRef("pk"))
    # Stamping creates a row with count 1 and only adds to it, so "at least once" is "has the row":
    # without the count the test reads only the (tag, lead) index.
    return tags if count_gte <= 1 else tags.filter(count__gte=count_gte)


def _tags_q(ids: list[int], count_gte: int) -> Q:
    if not ids:
        return Q(pk__isnull=True)  # no such tag: nobody has it (SQL that says false)
    return Q(Exists(_lead_tags(count_gte).filter(tag_id__in=sorted(set(ids)))))


def _merged_tags(children: list[Any], *, negated: bool) -> tuple[list[Q], list[Any]]:
    """Sibling tag tests of one count (`any`: tags; `all`: `not` tags) as one EXISTS over all their
    ids: one semi- or anti-join where each test was a sub-plan run per lead. Returns the merged `Q`s
    and the children left to compile one by one."""
    by_count: dict[int, list[int]] = {}
    rest = []
    for child in children:
        node = child.get("not") if negated else child
        ids = _known_tag_ids(node) if isinstance(node, dict) and "tag" in node else None
        if ids is None:
            rest.append(child)
        else:
            by_count.setdefault(node.get("count_gte", 1), []).extend(ids)
    merged = [~_tags_q(ids, n) if negated else _tags_q(ids, n) for n, ids in sorted(by_count.items())]
    return merged, rest


def rule_compile(rule: dict[str, Any], *, now: datetime) -> Q:
    """Compile a validated rule to one `Q` over `Lead`, as of `now` (for `within_days`, `days_since`)."""
    if "all" in rule:
        merged, rest = _merged_tags(rule["all"], negated=True)
        result = Q()
        for part in [*merged, *(rule_compile(child, now=now) for child in rest)]:
            result &= part
        return result
    if "any" in rule:
        merged, rest = _merged_tags(rule["any"], negated=False)
        result = Q(pk__in=[])
        for part in [*merged, *(rule_compile(child, now=now) for child in rest)]:
            result |= part
        return result
    if "not" in rule:
        return ~rule_compile(rule["not"], now=now)
    if "field" in rule:
        return _field_q(rule["field"], rule["op"], rule["value"])
    if "tag" in rule:
        from leads.tagging import tag_name_normalize

        count_gte = rule.get("count_gte", 1)
        ids = _known_tag_ids(rule)
        if ids is not None:
            return _tags_q(ids, count_gte)
        name = rule["tag"].strip()
        if name.endswith(":*"):  # any tag of the group
            return Q(Exists(_lead_tags(count_gte).filter(tag__group=name[:-2].strip())))
        return Q(Exists(_lead_tags(count_gte).filter(tag__name=tag_name_normalize(name))))
    if "event" in rule:
        return _event_q(rule, now)
    if "days_since" in rule:
        column = rule["days_since"]
        result = Q()
        # "at least N days since" means the instant lies at or before now - N days; never = no match.
        for op, flipped in (("gte", "lte"), ("gt", "lt"), ("lte", "gte"), ("lt", "gt")):
            if op in rule:
                result &= Q(**{f"{column}__{flipped}": now - timedelta(days=rule[op])})
        return result & Q(**{f"{column}__isnull": False})
    if "score_gte" in rule:
        return Q(score__gte=rule["score_gte"])
    if "bant_gte" in rule:
        return Q(GreaterThanOrEqual(_bant_count(), rule["bant_gte"]))
    if "pool" in rule:
        if _pool_compiler is None:
            raise RuleError("pool", "pools are not available")
        return _pool_compiler(rule["pool"], now)
    raise RuleError("rule", "not a rule node")


@dataclass(frozen=True)
class _TagIds:
    names_asked: frozenset[str]
    groups_asked: frozenset[str]
    by_name: dict[str, list[int]]
    by_group: dict[str, list[int]]


# The ids of the tags that the rules being compiled name, when the caller looked them up.
_TAG_IDS: ContextVar[_TagIds | None] = ContextVar("rule_tag_ids", default=None)


def _rule_tags(rule: Any, names: set[str], groups: set[str]) -> None:
    from leads.tagging import tag_name_normalize

    if not isinstance(rule, dict):
        return
    if isinstance(rule.get("tag"), str):
        name = rule["tag"].strip()
        if name.endswith(":*"):
            groups.add(name[:-2].strip())
        else:
            names.add(tag_name_normalize(name))
    for child in [*(rule.get("all") or []), *(rule.get("any") or []), rule.get("not")]:
        _rule_tags(child, names, groups)


@contextmanager
def rule_tag_ids_known(rules: Iterable[Any]) -> Iterator[None]:
    """Within the block, the tag nodes of these rules compile to the tags' ids, looked up now in one
    query, instead of a join on the tag's name or group: the planner then knows which rows of
    `leads_leadtag` a test reads (by name it guessed 1/n of the table and scanned all of it)."""
    names: set[str] = set()
    groups: set[str] = set()
    for rule in rules:
        _rule_tags(rule, names, groups)
    by_name: dict[str, list[int]] = {}
    by_group: dict[str, list[int]] = {}
    if names or groups:
        tags = Tag.objects.filter(Q(name__in=names) | Q(group__in=groups)).values_list("pk", "name", "group")
        for pk, name, group in tags:
            if name in names:
                by_name.setdefault(name, []).append(pk)
            if group in groups:
                by_group.setdefault(group, []).append(pk)
    token = _TAG_IDS.set(_TagIds(frozenset(names), frozenset(groups), by_name, by_group))
    try:
        yield
    finally:
        _TAG_IDS.reset(token)


def rule_matches(rule: dict[str, Any], lead: Lead, *, now: datetime) -> bool:
    """Does this one lead meet the rule? Asked through the same compiler as the set-based form."""
    return Lead.objects.filter(pk=lead.pk).filter(rule_compile(rule, now=now)).exists()


def rule_reads_score(rule: Any) -> bool:
    """Does a (valid) rule read the score or the temperature (so a rescore can change its answer)?"""
    if not isinstance(rule, dict):
        return False
    if "score_gte" in rule or rule.get("field") in ("score", "temperature"):
        return True
    children = [*(rule.get("all") or []), *(rule.get("any") or [])]
    if "not" in rule:
        children.append(rule["not"])
    return any(rule_reads_score(child) for child in children)
