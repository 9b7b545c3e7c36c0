"""API keys: `Authorization: Token <key>`, scopes `read`/`write`, throttled per key."""

from __future__ import annotations

import hashlib
import secrets

from django.db import transaction
from django.utils.timezone import now as timezone_now
from rest_framework import authentication, exceptions, permissions, throttling
from rest_framework.request import Request

from leads.models import ApiKey

KEY_PREFIX = "nk_"


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def api_key_create(*, name: str, scopes: list[str]) -> tuple[ApiKey, str]:
    """Create a key and return it with the plain key, which is shown once and never stored."""
    unknown = set(scopes) - set(ApiKey.Scope.values)
    if unknown or not scopes:
        raise ValueError(
            f"scopes must be among {', '.join(ApiKey.Scope.values)}; got {', '.join(scopes) or 'none'}"
        )
    plain = KEY_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        key = ApiKey.objects.create(
            name=name, prefix=plain[:10], digest=_digest(plain), scopes=sorted(set(scopes))
        )
    return key, plain


class ApiKeyUser:
    """What `request.user` is for API calls: the key, looking enough like a user for DRF."""

    is_authenticated = True
    is_active = True
    is_staff = False
    is_superuser = False
    is_anonymous = False

    def __init__(self, key: ApiKey) -> None:
        self.key = key
        self.pk = None
        self.username = f"apikey:{key.name}"

    def __str__(self) -> str:
        return self.username


class ApiKeyAuthentication(authentication.BaseAuthentication):
    keyword = "Token"

    def authenticate(self, request: Request) -> tuple[ApiKeyUser, ApiKey] | None:
        header = authentication.get_authorization_header(request).split()
        if not header or header[0].lower() != self.keyword.lower().encode():
            return None
        if len(header) != 2:
            raise exceptions.AuthenticationFailed("Authorization must be 'Token <key>'.")
        try:
            plain = header[1].decode()
        except UnicodeError as exc:
            raise exceptions.AuthenticationFailed("Invalid API key.") from exc
        key = ApiKey.objects.filter(digest=_digest(plain), revoked_at__isnull=True).first()
        if key is None:
            raise exceptions.AuthenticationFailed("Invalid API key.")
        now = timezone_now()
        if key.last_used_at is None or (now - key.last_used_at).total_seconds() > 60:
            ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
        return ApiKeyUser(key), key

    def authenticate_header(self, request: Request) -> str:
        # Makes DRF answer 401 (not 403) when no valid key is given.
        return self.keyword


class HasScope(permissions.BasePermission):
    """Reads need the `read` scope, writes the `write` scope (a view may set `required_scope`)."""

    message = "This API key does not have the scope this call needs."

    def has_permission(self, request: Request, view: object) -> bool:
        key = request.auth
        if not isinstance(key, ApiKey):
            raise exceptions.NotAuthenticated()
        scope = getattr(view, "required_scope", None) or (
            ApiKey.Scope.READ if request.method in permissions.SAFE_METHODS else ApiKey.Scope.WRITE
        )
        if not key.has_scope(scope):
            self.message = f"This API key does not have the '{scope}' scope."
            return False
        return True


class ApiKeyRateThrottle(throttling.SimpleRateThrottle):
    """Requests per key per period (API_THROTTLE_RATE), counted in the shared cache."""

    scope = "api_key"

    def get_cache_key(self, request: Request, view: object) -> str | None:
        if isinstance(request.auth, ApiKey):
            return self.cache_format % {"scope": self.scope, "ident": request.auth.pk}
        return self.cache_format % {"scope": self.scope, "ident": self.get_ident(request)}
