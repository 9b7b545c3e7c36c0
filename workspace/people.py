"""How the workspace names a person: Chinese names family name first and without a space (王思琪), others
as Django does (first last), the username when neither is set."""

from __future__ import annotations

from typing import Any


def _cjk(text: str) -> bool:
    return any("\u4e00" <= ch <= "\u9fff" for ch in text)


def person_name(user: Any) -> str:
    if user is None:
        return ""
    first, last = (user.first_name or "").strip(), (user.last_name or "").strip()
    if first and last and (_cjk(first) or _cjk(last)):
        return f"{last}{first}"
    return f"{first} {last}".strip() or user.username
