"""A realistic default scoring model (fit and behaviour) and thresholds; marketers edit it in the admin."""

from django.db import migrations

TARGET_INDUSTRIES = ["制造", "信息科技", "金融", "医疗"]
BIG_COMPANIES = ["200-499", "500-999", "1000-4999", "5000+"]
DECISION_MAKER_WORDS = ["总监", "总经理", "负责人", "VP", "CEO", "CTO", "CIO", "副总裁", "董事"]

FIT_RULES = [
    ("目标行业", 15, {"field": "industry", "op": "in", "value": TARGET_INDUSTRIES}, "制造、信息科技、金融、医疗"),
    ("企业规模 200 人以上", 10, {"field": "company_size", "op": "in", "value": BIG_COMPANIES}, ""),
    (
        "决策层职位",
        15,
        {"any": [{"field": "title", "op": "contains", "value": word} for word in DECISION_MAKER_WORDS]},
        "总监、总经理、负责人、VP、CEO/CTO/CIO、副总裁、董事",
    ),
    ("有明确需求", 5, {"tag": "need:*"}, "带有任一需求标签"),
    (
        "有采购计划",
        10,
        {
            "any": [
                {"field": "properties.buying_plan", "op": "is_set", "value": True},
                {"field": "bant_timeline", "op": "eq", "value": True},
            ]
        },
        "",
    ),
    ("BANT 满足 2 项以上", 10, {"bant_gte": 2}, ""),
]

# name, event type, where, points, cap per day, cap in total, half-life in days
BEHAVIOUR_RULES = [
    ("阅读内容", "content_viewed", {}, 3, 9, None, 30),
    ("阅读白皮书", "content_viewed", {"form": "whitepaper"}, 6, 12, None, 45),
    ("阅读客户案例", "content_viewed", {"form": "case_study"}, 5, 10, None, 30),
    ("提交表单", "form_submitted", {}, 10, 20, None, 60),
    ("添加企业微信", "wecom_added", {}, 10, None, 10, 90),
    ("企微私聊回复", "message_in", {}, 4, 12, None, 14),
    ("点击链接", "link_clicked", {}, 2, 6, None, 14),
    ("打开邮件", "email_opened", {}, 1, 3, 15, 14),
    ("报名直播", "webinar_registered", {}, 5, None, None, 30),
    ("参加直播", "webinar_attended", {}, 15, None, None, 45),
    ("开始试用", "trial_started", {}, 25, None, 25, 60),
    ("删除企业微信", "wecom_deleted", {}, -20, None, None, 90),
    ("邮件退信", "email_bounced", {}, -5, None, None, None),
    ("退订", "unsubscribed", {}, -40, None, None, None),
]


def create(apps, schema_editor):
    ScoringRule = apps.get_model("scoring", "ScoringRule")
    ScoringSettings = apps.get_model("scoring", "ScoringSettings")
    ScoringSettings.objects.get_or_create(pk=1)
    if ScoringRule.objects.exists():
        return
    for position, (name, points, rule, description) in enumerate(FIT_RULES, start=1):
        ScoringRule.objects.create(
            name=name, kind="fit", points=points, rule=rule, description=description, position=position * 10
        )
    for position, (name, event_type, where, points, per_day, total, half_life) in enumerate(
        BEHAVIOUR_RULES, start=1
    ):
        ScoringRule.objects.create(
            name=name,
            kind="behaviour",
            event_type=event_type,
            where=where,
            points=points,
            cap_per_day=per_day,
            cap_total=total,
            half_life_days=half_life,
            position=position * 10,
        )


def remove(apps, schema_editor):
    apps.get_model("scoring", "ScoringRule").objects.all().delete()
    apps.get_model("scoring", "ScoringSettings").objects.all().delete()


class Migration(migrations.Migration):
    dependencies = [("scoring", "0001_scoring")]
    operations = [migrations.RunPython(create, remove)]
