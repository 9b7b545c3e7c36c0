"""Drop the `varchar_pattern_ops` twin PostgreSQL got for `wechat_openid` (as 0007 did for the other
identities): nothing searches an openid by prefix, and every lead update that is not HOT paid for it.
Its own migration: Django creates the twin at the end of the migration that adds the column."""

from django.db import migrations

TABLE = "leads_lead"


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
            "AND indexdef LIKE %s",
            [TABLE, "%(wechat_openid varchar_pattern_ops)%"],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')


def restore(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            f'CREATE INDEX IF NOT EXISTS "{TABLE}_wechat_openid_like" ON {TABLE} ("wechat_openid" varchar_pattern_ops)'
        )


class Migration(migrations.Migration):
    dependencies = [("leads", "0010_dirtylead_events")]

    operations = [migrations.RunPython(drop, restore)]
