"""Normalisation of lead identities: one person has one phone number however it is typed."""

from __future__ import annotations

import re

import phonenumbers
from django.conf import settings
from phonenumbers import NumberParseException, PhoneNumberFormat, PhoneNumberType, ValidationResult

_REASONS = {
    ValidationResult.INVALID_COUNTRY_CODE: "unknown country code",
    ValidationResult.TOO_SHORT: "too short",
    ValidationResult.TOO_LONG: "too long",
    ValidationResult.INVALID_LENGTH: "wrong number of digits",
}
_SEPARATORS = re.compile(r"[\s\-().]")


class IdentityError(ValueError):
    """An identity value that cannot be normalised; the message says why, for the API's 400."""


def normalize_phone(raw: str) -> str:
    """Return `raw` as E.164; `+86` is assumed for mainland numbers typed without a country code.

    `13800138000`, `138 0013 8000`, `+86-138-0013-8000` and `8613800138000` are one number.
    """
    value = _SEPARATORS.sub("", str(raw).strip())
    if not value:
        raise IdentityError("empty phone number")
    if value.startswith("00"):
        value = "+" + value[2:]
    elif value.isdigit() and value.startswith("86") and len(value) == 13:
        value = "+" + value
    try:
        number = phonenumbers.parse(value, settings.PHONE_DEFAULT_REGION)
    except NumberParseException as exc:
        raise IdentityError(f"not a phone number: {exc._msg}") from exc
    if not phonenumbers.is_possible_number(number):
        reason = _REASONS.get(phonenumbers.is_possible_number_with_reason(number), "not a possible number")
        raise IdentityError(f"not a valid phone number: {reason}")
    if not phonenumbers.is_valid_number(number):
        raise IdentityError("not a valid phone number: no such number range")
    if number.country_code == 86 and phonenumbers.number_type(number) not in (
        PhoneNumberType.MOBILE,
        PhoneNumberType.FIXED_LINE_OR_MOBILE,
    ):
        raise IdentityError("not a mainland mobile number")
    return phonenumbers.format_number(number, PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    value = str(raw).strip().lower()
    if "@" not in value or value.startswith("@") or value.endswith("@"):
        raise IdentityError("not an email address")
    return value


def normalize_identity(field: str, raw: object) -> str | None:
    """Normalise one identity value; blank becomes None (identities are unique only when set)."""
    if raw is None:
        return None
    text = str(raw).strip()
    if not text:
        return None
    if field == "phone":
        return normalize_phone(text)
    if field == "email":
        return normalize_email(text)
    return text
