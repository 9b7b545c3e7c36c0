"""The lead table carries only the indexes something reads (PostgreSQL)."""

import pytest
from django.db import connection


@pytest.mark.django_db
def test_the_identity_columns_have_no_prefix_search_twins():
    if connection.vendor != "postgresql":
        pytest.skip("pattern-ops indexes exist only on PostgreSQL")
    with connection.cursor() as cursor:
        cursor.execute("SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'leads_lead'")
        indexes = dict(cursor.fetchall())
    assert not [name for name, definition in indexes.items() if "pattern_ops" in definition]
    # The unique identities are still unique (the constraint's own index stays).
    assert {"leads_lead_phone_key", "leads_lead_email_key", "leads_lead_external_id_key"} <= set(indexes)
