"""Message templates in a sandbox: Django's template language, but only text, whitelisted variables,
`if`, and a few filters. A template is checked when it is saved (what it may read, which tags and filters
it uses) and rendered with plain values, never with a model object, so it can read nothing else."""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache
from typing import Any

from django.template import Context, Engine, Template, TemplateSyntaxError
from django.template.base import FilterExpression, Node, TextNode, VariableNode
from django.template.defaulttags import IfNode

from leads.models import Lead

# What a template may read: lead fields, the touch's link and asset, the sender.
LEAD_FIELDS = ("name", "company", "title", "industry", "company_size", "source")
VARIABLES = frozenset(
    {f"lead.{field}" for field in LEAD_FIELDS} | {"link", "asset.title", "asset.summary", "sender.name"}
)
FILTERS = frozenset({"default", "upper", "lower", "truncatechars", "first", "slice", "length"})
_ENGINE = Engine(debug=False, autoescape=False, string_if_invalid="")
# A parsed filter is its registered function, not its name (`slice` is `slice_filter`): compare those.
_BUILTIN_FILTERS = [library.filters for library in _ENGINE.template_builtins]
_FILTER_NAMES = {func: name for filters in _BUILTIN_FILTERS for name, func in filters.items()}
_ALLOWED_FILTERS = frozenset(f[name] for f in _BUILTIN_FILTERS for name in FILTERS if name in f)


class TemplateRefused(ValueError):
    """A template that does not compile, or reads or does something outside the sandbox."""


def _check_expression(expression: FilterExpression) -> None:
    var = expression.var
    name = getattr(var, "var", None)
    if isinstance(name, str) and getattr(var, "lookups", None) is not None and name not in VARIABLES:
        allowed = ", ".join(sorted(VARIABLES))
        raise TemplateRefused(f"{{{{ {name} }}}} is not available (use: {allowed})")
    for func, args in expression.filters:
        if func not in _ALLOWED_FILTERS:
            filter_name = _FILTER_NAMES.get(func, getattr(func, "__name__", str(func)))
            raise TemplateRefused(
                f"the filter '{filter_name}' is not allowed (use: {', '.join(sorted(FILTERS))})"
            )
        for _, arg in args:
            if getattr(arg, "lookups", None) is not None and arg.var not in VARIABLES:
                raise TemplateRefused(f"{{{{ {arg.var} }}}} is not available")


def _check_condition(condition: Any) -> None:
    """Walk an `if` condition (operators and operands) down to its variables."""
    for attr in ("first", "second"):
        operand = getattr(condition, attr, None)
        if operand is not None:
            _check_condition(operand)
    value = getattr(condition, "value", None)
    if isinstance(value, FilterExpression):
        _check_expression(value)


def _check(nodes: list[Node]) -> None:
    for node in nodes:
        if isinstance(node, TextNode):
            if any(mark in node.s for mark in ("{{", "}}", "{%", "%}")):
                raise TemplateRefused(f"an unclosed or stray tag in: {node.s.strip()[:40]}")
            continue
        if isinstance(node, VariableNode):
            _check_expression(node.filter_expression)
        elif isinstance(node, IfNode):
            for condition, nodelist in node.conditions_nodelists:
                if condition is not None:
                    _check_condition(condition)
                _check(list(nodelist))
        else:
            tag = type(node).__name__.removesuffix("Node").lower() or "tag"
            raise TemplateRefused(f"the template tag '{tag}' is not allowed (only {{% if %}} and variables)")


def template_check(body: str) -> None:
    """Raise TemplateRefused unless the body compiles and stays inside the sandbox."""
    _checked(body)


@lru_cache(maxsize=512)
def _checked(body: str) -> Template:
    """The compiled template of a body that passed the sandbox check; a dispatch batch renders one
    step's text for hundreds of leads, and compiles and checks it once."""
    try:
        template = _ENGINE.from_string(body)
    except TemplateSyntaxError as exc:
        raise TemplateRefused(f"does not compile: {exc}") from exc
    _check(list(template.nodelist))
    return template


def template_context(*, lead: Lead, link: str = "", asset: Any = None, sender: str = "") -> dict[str, Any]:
    """Plain values only: a template never sees a model object."""
    return {
        "lead": {field: getattr(lead, field) or "" for field in LEAD_FIELDS},
        "link": link,
        "asset": {"title": getattr(asset, "title", ""), "summary": getattr(asset, "summary", "")},
        "sender": {"name": sender},
    }


def template_render(body: str, context: Mapping[str, Any]) -> str:
    """Render a (checked) template body with a context of plain values."""
    return _checked(body).render(Context(dict(context), autoescape=False)).strip()
