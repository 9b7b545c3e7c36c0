"""The lead and event API (CONTRACT §3)."""
