"""The API's error answers: field-by-field 400s, 409 for identity conflicts, never a 500 for input."""

from __future__ import annotations

import logging
from typing import Any

from django.db import DataError, IntegrityError
from rest_framework import status
from rest_framework.response import Response
from rest_framework.views import exception_handler as drf_exception_handler

logger = logging.getLogger(__name__)


def exception_handler(exc: Exception, context: dict[str, Any]) -> Response | None:
    from leads.services import IdentityConflict

    if isinstance(exc, IdentityConflict):
        return Response({"detail": str(exc), "code": "identity_conflict"}, status=status.HTTP_409_CONFLICT)
    if isinstance(exc, IntegrityError):
        logger.info("conflict: %s", exc)
        return Response(
            {"detail": "This conflicts with existing data.", "code": "conflict"},
            status=status.HTTP_409_CONFLICT,
        )
    if isinstance(exc, DataError):
        return Response(
            {"detail": "A value is out of range.", "code": "invalid"}, status=status.HTTP_400_BAD_REQUEST
        )
    return drf_exception_handler(exc, context)
