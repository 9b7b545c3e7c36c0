"""OpenAPI description of the API key scheme and the error answers every operation can give."""

from __future__ import annotations

from typing import Any

from drf_spectacular.extensions import OpenApiAuthenticationExtension

ERROR = {
    "type": "object",
    "description": "`detail` for general errors, or field name → list of messages for bad input",
    "additionalProperties": True,
}
COMMON_ERRORS = {
    "400": "Bad input: field-by-field messages",
    "401": "No valid API key",
    "403": "The key lacks the scope",
    "404": "No such object",
    "409": "An identity belongs to another lead",
    "429": "Too many requests for this key",
}


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "leads.auth.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema: Any) -> dict[str, Any]:
        return {
            "type": "apiKey",
            "in": "header",
            "name": "Authorization",
            "description": "`Token <key>`; keys come from `manage.py create_api_key NAME --scopes …`",
        }


def add_error_responses(result: dict[str, Any], generator: Any, request: Any, public: bool) -> dict[str, Any]:
    """Postprocessing hook: document the error statuses on every API operation."""
    for path, operations in result.get("paths", {}).items():
        if not path.startswith("/api/v1/"):
            continue
        for operation in operations.values():
            responses = operation.setdefault("responses", {})
            for code, description in COMMON_ERRORS.items():
                responses.setdefault(
                    code, {"description": description, "content": {"application/json": {"schema": ERROR}}}
                )
    return result
