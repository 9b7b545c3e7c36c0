"""The sequence API: `/api/v1/sequences/` and `/api/v1/touches/` (CONTRACT §3)."""

from sequences.api.views import SequenceViewSet, TouchViewSet

__all__ = ["SequenceViewSet", "TouchViewSet"]
