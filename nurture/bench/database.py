"""A throwaway PostgreSQL database for the benchmark, so the configured one is never touched."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager

from django.core.management.base import CommandError
from django.db import connection


def bench_database_refuse_unless_postgresql() -> None:
    """The figures are about PostgreSQL; on SQLite they would mean nothing."""
    if connection.vendor != "postgresql":
        raise CommandError(
            f"bench needs PostgreSQL (the configured database is {connection.vendor}): "
            "set DATABASE_URL=postgres://… — the benchmark creates and drops its own database there."
        )


@contextmanager
def bench_database(*, verbosity: int = 0) -> Iterator[str]:
    """Create a fresh, migrated database beside the configured one, point the default connection
    at it, and drop it afterwards whatever happens. Yields its name."""
    bench_database_refuse_unless_postgresql()
    settings_dict = connection.settings_dict
    old_name = settings_dict["NAME"]
    test_settings = settings_dict.setdefault("TEST", {})
    old_test_name = test_settings.get("NAME")
    # One name per process: other sessions' test databases and benches stay out of reach.
    name = f"{old_name}_bench_{os.getpid()}"[:63]
    test_settings["NAME"] = name
    try:
        connection.creation.create_test_db(verbosity=verbosity, autoclobber=True, serialize=False)
        yield name
    finally:
        try:
            if settings_dict["NAME"] == name:
                connection.creation.destroy_test_db(old_name, verbosity=verbosity)
        finally:
            test_settings["NAME"] = old_test_name
