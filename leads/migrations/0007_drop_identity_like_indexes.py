"""Drop the `varchar_pattern_ops` twins PostgreSQL got for the five unique identity columns.

Django adds one per unique CharField for `LIKE 'prefix%'` lookups; nothing here searches an identity
by prefix (phone search is `contains`, which no btree serves), and every lead update that is not HOT
(stage, updated_at) paid for five more index entries: 17 indexes became 12."""

from django.db import migrations

TABLE = "leads_lead"
COLUMNS = ("external_id", "phone", "email", "wecom_external_userid", "wechat_unionid")


def drop(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema() AND tablename = %s "
            "AND indexdef LIKE %s",
            [TABLE, "%varchar_pattern_ops%"],
        )
        for (name,) in cursor.fetchall():
            cursor.execute(f'DROP INDEX IF EXISTS "{name}"')


def restore(apps, schema_editor):
    if schema_editor.connection.vendor != "postgresql":
        return
    with schema_editor.connection.cursor() as cursor:
        for column in COLUMNS:
            cursor.execute(
                f'CREATE INDEX IF NOT EXISTS "{TABLE}_{column}_like" ON {TABLE} ("{column}" varchar_pattern_ops)'
            )


class Migration(migrations.Migration):
    dependencies = [("leads", "0006_lead_temperature_index")]

    operations = [migrations.RunPython(drop, restore)]
