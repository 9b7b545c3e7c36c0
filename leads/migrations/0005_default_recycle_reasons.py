"""Default recycle reasons, and value-pool rules that read their tags: the reason decides the tier."""

from django.db import migrations

REASONS = [
    ("timing_later", "时机未到", "recycle:timing_later", 10),
    ("competitor", "在用竞品", "recycle:competitor", 20),
    ("no_budget", "暂无预算", "recycle:no_budget", 30),
    ("wrong_person", "非决策人", "recycle:wrong_person", 40),
    ("no_need", "暂无需求", "recycle:no_need", 50),
]
MIL_NOT_MQL = [{"pool": "mil"}, {"not": {"pool": "mql"}}]
LOW_REASONS = [{"not": {"tag": "recycle:wrong_person"}}, {"not": {"tag": "recycle:no_need"}}]
RULES = {
    "value-high": {
        "all": [
            *MIL_NOT_MQL,
            *LOW_REASONS,
            {"not": {"tag": "recycle:no_budget"}},
            {"any": [{"tag": "need:*"}, {"tag": "recycle:timing_later"}, {"tag": "recycle:competitor"}]},
        ]
    },
    "value-medium": {
        "all": [
            *MIL_NOT_MQL,
            *LOW_REASONS,
            {"any": [{"field": "industry", "op": "is_set", "value": True}, {"tag": "recycle:no_budget"}]},
        ]
    },
}
PREVIOUS = {
    "value-high": {"all": [*MIL_NOT_MQL, {"tag": "need:*"}]},
    "value-medium": {"all": [*MIL_NOT_MQL, {"field": "industry", "op": "is_set", "value": True}]},
}


def forward(apps, schema_editor):
    RecycleReason = apps.get_model("leads", "RecycleReason")
    Pool = apps.get_model("leads", "Pool")
    for code, label, tag, position in REASONS:
        RecycleReason.objects.get_or_create(code=code, defaults={"label": label, "tag_name": tag, "position": position})
    for slug, rule in RULES.items():
        # Only a rule nobody has edited yet is replaced.
        Pool.objects.filter(slug=slug, rule=PREVIOUS[slug]).update(rule=rule)


def backward(apps, schema_editor):
    Pool = apps.get_model("leads", "Pool")
    for slug, rule in RULES.items():
        Pool.objects.filter(slug=slug, rule=rule).update(rule=PREVIOUS[slug])
    apps.get_model("leads", "RecycleReason").objects.filter(code__in=[r[0] for r in REASONS]).delete()


class Migration(migrations.Migration):
    dependencies = [("leads", "0004_recycle_reasons"), ("leads", "0003_default_pools")]
    operations = [migrations.RunPython(forward, backward)]
