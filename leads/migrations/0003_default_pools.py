"""The default pools of DESIGN.md; marketers edit them in the admin afterwards."""

from django.db import migrations

TARGET_INDUSTRIES = ["制造", "信息科技", "金融", "医疗"]
MIL_NOT_MQL = [{"pool": "mil"}, {"not": {"pool": "mql"}}]

DEFAULT_POOLS = [
    {
        "slug": "mil",
        "name": "MIL 已留资线索",
        "goal": "引导完善信息、建立信任",
        "description": "Registered: a mobile number is known or the lead added us on WeCom.",
        "rule": {
            "any": [
                {"field": "phone", "op": "is_set", "value": True},
                {"field": "wecom_external_userid", "op": "is_set", "value": True},
                {"event": "wecom_added"},
            ]
        },
    },
    {
        "slug": "mql",
        "name": "MQL 市场认可线索",
        "goal": "推动试用/演示，转交 SDR",
        "description": "Industry in the target list, a need tag, and a buying plan (property or BANT timeline).",
        "rule": {
            "all": [
                {"pool": "mil"},
                {"field": "industry", "op": "in", "value": TARGET_INDUSTRIES},
                {"tag": "need:*"},
                {
                    "any": [
                        {"field": "properties.buying_plan", "op": "is_set", "value": True},
                        {"field": "bant_timeline", "op": "eq", "value": True},
                    ]
                },
            ]
        },
    },
    {
        "slug": "sql",
        "name": "SQL 销售认可线索",
        "goal": "销售跟进、赢单",
        "description": "Stage sql, written back by the CRM or an SDR.",
        "rule": {"field": "stage", "op": "eq", "value": "sql"},
    },
    {
        "slug": "value-high",
        "name": "高价值池",
        "goal": "方案内容 + 案例，促成购买计划",
        "description": "MILs not in MQL that have a need tag (may use a competitor or lack a buying plan).",
        "family": "value",
        "priority": 10,
        "rule": {"all": [*MIL_NOT_MQL, {"tag": "need:*"}]},
    },
    {
        "slug": "value-medium",
        "name": "中价值池",
        "goal": "行业内容，挖掘需求",
        "description": "MILs not in MQL whose industry is known but need unknown.",
        "family": "value",
        "priority": 20,
        "rule": {"all": [*MIL_NOT_MQL, {"field": "industry", "op": "is_set", "value": True}]},
    },
    {
        "slug": "value-low",
        "name": "低价值池",
        "goal": "低频认知内容，补全画像",
        "description": "MILs not in MQL about whom little is known.",
        "family": "value",
        "priority": 30,
        "rule": {"all": MIL_NOT_MQL},
    },
    {
        "slug": "silent-14-days",
        "name": "沉默 14 天",
        "goal": "唤醒：新内容、活动邀请",
        "description": "Contacted before, but no inbound signal for 14 days or more.",
        "rule": {"all": [{"days_since": "last_inbound_at", "gte": 14}, {"event": "message_out"}]},
    },
]


def create(apps, schema_editor):
    Pool = apps.get_model("leads", "Pool")
    for spec in DEFAULT_POOLS:
        Pool.objects.get_or_create(slug=spec["slug"], defaults=spec)


def remove(apps, schema_editor):
    Pool = apps.get_model("leads", "Pool")
    Pool.objects.filter(slug__in=[spec["slug"] for spec in DEFAULT_POOLS]).delete()


class Migration(migrations.Migration):
    dependencies = [("leads", "0002_pools")]
    operations = [migrations.RunPython(create, remove)]
