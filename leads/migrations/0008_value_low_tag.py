"""The value pools read `value:low`: a sequence that ends with a cold lead tags it (its on_complete
"cold" action) and the lead moves down to the low-value pool."""

import copy

from django.db import migrations

DOWN = {"not": {"tag": "value:low"}}
MIL_NOT_MQL = [{"pool": "mil"}, {"not": {"pool": "mql"}}]
LOW_REASONS = [{"not": {"tag": "recycle:wrong_person"}}, {"not": {"tag": "recycle:no_need"}}]
PREVIOUS = {
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


def _with_down(rule):
    rule = copy.deepcopy(rule)
    rule["all"].insert(2, DOWN)
    return rule


def forward(apps, schema_editor):
    Pool = apps.get_model("leads", "Pool")
    for slug, rule in PREVIOUS.items():
        # Only a rule nobody has edited yet is replaced.
        Pool.objects.filter(slug=slug, rule=rule).update(rule=_with_down(rule))


def backward(apps, schema_editor):
    Pool = apps.get_model("leads", "Pool")
    for slug, rule in PREVIOUS.items():
        Pool.objects.filter(slug=slug, rule=_with_down(rule)).update(rule=rule)


class Migration(migrations.Migration):
    dependencies = [("leads", "0007_drop_identity_like_indexes")]
    operations = [migrations.RunPython(forward, backward)]
