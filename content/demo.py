"""Demo: a content library in Chinese modelled on the field (whitepapers, cases per industry, scenario
articles for ten needs, a free trial, a webinar), a consent text, message templates, the links the
demo leads were sent, and the view counters rebuilt from the demo's `content_viewed` events."""

from __future__ import annotations

import secrets
from datetime import timedelta

from django.db.models import Count, Max, Min
from django.db.models.fields.json import KeyTextTransform

from content.models import AssetViewer, ConsentText, ContentAsset, MessageTemplate, TagViewer, TrackedLink
from leads.demo import DEMO_ASSETS, NEEDS, DemoContext
from leads.models import Event, Lead
from leads.tagging import tags_get_or_create

# slug: (title, form, awareness, funnel, friction, value proximity, call to action, tags, summary)
LIBRARY: dict[str, tuple[str, str, str, str, int, int, str, list[str], str]] = {
    "wp-online-acquisition": (
        DEMO_ASSETS["wp-online-acquisition"][0],
        "whitepaper",
        "problem_aware",
        "tofu",
        2,
        2,
        "免费下载白皮书",
        ["topic:线上获客白皮书", "need:全渠道获客", "form:白皮书"],
        "疫情之后，B2B 企业的获客从线下展会转向线上。本白皮书梳理了 12 个线上获客渠道的投入产出，"
        "以及如何用内容换取高质量线索。",
    ),
    "wp-b2b-content-marketing": (
        "B2B 内容营销白皮书：从内容生产到线索转化",
        "whitepaper",
        "problem_aware",
        "tofu",
        2,
        2,
        "免费下载白皮书",
        ["topic:内容营销", "need:内容营销", "form:白皮书"],
        "内容是 B2B 营销的诱饵：什么内容换什么线索，如何按认知阶段布局白皮书、案例与直播。",
    ),
    "wp-lead-nurturing": (
        DEMO_ASSETS["wp-lead-nurturing"][0],
        "whitepaper",
        "solution_aware",
        "mofu",
        2,
        3,
        "下载指南",
        ["topic:线索培育", "need:线索培育", "form:白皮书"],
        "MIL、MQL、SQL 怎么分池，高中低价值线索各自如何培育，SOP 如何按相对时间轴执行。",
    ),
    "wp-digital-factory": (
        DEMO_ASSETS["wp-digital-factory"][0],
        "whitepaper",
        "problem_aware",
        "tofu",
        2,
        2,
        "免费下载白皮书",
        ["topic:数字化转型", "industry:制造", "form:白皮书"],
        "中小制造企业在展会之外如何获客：官网、企微与内容的组合打法。",
    ),
    "report-martech": (
        DEMO_ASSETS["report-martech"][0],
        "whitepaper",
        "problem_aware",
        "tofu",
        1,
        1,
        "阅读报告",
        ["topic:营销自动化", "need:营销自动化", "form:报告"],
        "中国 B2B 企业营销技术的采用现状与趋势。",
    ),
    "article-relative-sop": (
        DEMO_ASSETS["article-relative-sop"][0],
        "article",
        "solution_aware",
        "mofu",
        1,
        3,
        "阅读全文",
        ["topic:私域运营", "need:私域运营", "form:文章"],
        "不要每天群发：按每个客户自己的时间轴，第 1、3、7 …… 366 天推送，让每个客户走同样的旅程。",
    ),
    "article-bant": (
        DEMO_ASSETS["article-bant"][0],
        "article",
        "solution_aware",
        "mofu",
        1,
        3,
        "阅读全文",
        ["topic:销售协同", "need:销售协同", "form:文章"],
        "预算、决策人、需求、时间：满足 1–2 项是 MQL，3 项以上交给销售。",
    ),
    "article-journey": (
        DEMO_ASSETS["article-journey"][0],
        "article",
        "problem_aware",
        "tofu",
        1,
        2,
        "阅读全文",
        ["topic:客户旅程", "form:文章"],
        "客户旅程的五个阶段，以及每个阶段该给客户什么内容。",
    ),
    "article-content-bait": (
        DEMO_ASSETS["article-content-bait"][0],
        "article",
        "problem_aware",
        "tofu",
        1,
        2,
        "阅读全文",
        ["topic:内容营销", "need:内容营销", "form:文章"],
        "白皮书、案例、直播、试用：按摩擦度和价值接近度排列你的内容。",
    ),
    "article-silent-users": (
        DEMO_ASSETS["article-silent-users"][0],
        "article",
        "solution_aware",
        "mofu",
        1,
        3,
        "阅读全文",
        ["topic:私域运营", "need:私域运营", "form:文章"],
        "14 天没有互动的客户，用新内容、活动邀请与一对一关怀唤醒。",
    ),
    "template-sop-366": (
        DEMO_ASSETS["template-sop-366"][0],
        "ppt",
        "solution_aware",
        "mofu",
        3,
        3,
        "领取模板",
        ["topic:私域运营", "need:私域运营", "form:模板"],
        "可直接套用的 366 天企微 SOP 模板，含每个节点的话术与内容。",
    ),
    "video-product-tour": (
        DEMO_ASSETS["video-product-tour"][0],
        "video",
        "product_aware",
        "bofu",
        1,
        4,
        "观看视频",
        ["topic:营销自动化", "need:营销自动化", "form:视频"],
        "5 分钟看懂线索池、内容标签、SOP 与评分如何协同。",
    ),
    "webinar-replay-live": (
        DEMO_ASSETS["webinar-replay-live"][0],
        "webinar",
        "solution_aware",
        "mofu",
        3,
        3,
        "观看回放",
        ["topic:直播获客", "need:直播获客", "form:直播"],
        "直播获客全流程：报名、提醒、互动、会后 30 天培育到商机。",
    ),
    "webinar-live-acquisition": (
        "直播：B2B 线上获客实战公开课（每月第二个周四）",
        "webinar",
        "solution_aware",
        "mofu",
        3,
        3,
        "立即报名",
        ["topic:直播获客", "need:全渠道获客", "form:直播"],
        "每月一场，嘉宾来自制造、SaaS 与零售企业的市场负责人。",
    ),
    "trial-14-days": (
        DEMO_ASSETS["trial-14-days"][0],
        "trial",
        "product_aware",
        "bofu",
        4,
        5,
        "免费试用",
        ["topic:营销自动化", "form:试用"],
        "14 天全功能试用，含专属顾问一对一上线指导。",
    ),
    "demo-booking": (
        "预约产品演示：30 分钟看懂你的线索转化漏斗",
        "demo",
        "product_aware",
        "bofu",
        5,
        5,
        "预约演示",
        ["topic:营销自动化", "form:演示"],
        "顾问用你的行业数据演示从获客到商机的全流程。",
    ),
}
CASES = {
    "制造": ("case-manufacturing", DEMO_ASSETS["case-manufacturing"][0], "线索培育"),
    "零售": ("case-retail-private", DEMO_ASSETS["case-retail-private"][0], "私域运营"),
    "信息科技": ("case-saas-mql", DEMO_ASSETS["case-saas-mql"][0], "销售协同"),
    "金融": ("case-finance", "金融案例：理财顾问企微 SOP 让到店率提升 35%", "私域运营"),
    "医疗": ("case-medical", "医疗器械案例：学术会议线索 90 天培育到商机", "线索培育"),
    "教育": ("case-education", "教育案例：沉默 14 天唤醒，试听转化率翻倍", "私域运营"),
    "物流": ("case-logistics", "物流案例：展会线索按价值分池，销售跟进效率提升 2 倍", "线索培育"),
}
CONSENT = (
    "2026-01",
    "提交即表示您同意我们通过电话、短信、企业微信或邮件与您联系，介绍与本资料相关的产品与服务。"
    "您的信息仅用于上述目的，可随时回复 TD 或联系我们退订。",
)
TEMPLATES = {
    "白皮书推送": "{{ lead.name|default:'您' }}好，这是为{{ lead.company|default:'贵司' }}准备的"
    "《{{ asset.title }}》，2 分钟看完：{{ link }}",
    "案例推送": "{{ lead.name|default:'您' }}好，{% if lead.industry %}{{ lead.industry }}行业{% endif %}"
    "的同行是这样做的：《{{ asset.title }}》{{ link }}",
    "试用邀请": "{{ lead.name|default:'您' }}好，看到您关注{{ asset.title }}，"
    "为您开通了 14 天免费试用：{{ link }}",
}


def _assets() -> dict[str, tuple[str, str, str, str, int, int, str, list[str], str]]:
    assets = dict(LIBRARY)
    for industry, (slug, title, need) in CASES.items():
        assets[slug] = (
            title,
            "case_study",
            "solution_aware",
            "mofu",
            1,
            4,
            "查看案例",
            [f"industry:{industry}", f"need:{need}", "form:案例", f"topic:{need}"],
            f"{industry}行业客户如何用线索培育把沉睡线索变成商机。",
        )
    for index, need in enumerate(NEEDS):
        assets[f"scenario-{index + 1:02d}"] = (
            f"场景方案：{need}",
            "article",
            "solution_aware",
            "mofu",
            1,
            3,
            "阅读方案",
            [f"need:{need}", f"topic:{need}", "form:文章"],
            f"{need}的场景策略：目标、关键动作、内容与 SOP 节点。",
        )
    return assets


def demo_content_load(ctx: DemoContext) -> dict[str, int]:
    """The content library, a consent text, message templates, sent links and the view counters."""
    library = _assets()
    all_tags = tags_get_or_create(names={name for spec in library.values() for name in spec[7]})
    for slug, (title, form, awareness, funnel, friction, proximity, cta, tags, summary) in library.items():
        asset, _ = ContentAsset.objects.update_or_create(
            slug=slug,
            defaults={
                "title": title,
                "form": form,
                "awareness": awareness,
                "funnel": funnel,
                "friction": friction,
                "value_proximity": proximity,
                "call_to_action": cta,
                "summary": summary,
                "gated": form == "whitepaper",
                "target_url": "" if form == "whitepaper" else f"https://www.nurture-demo.cn/content/{slug}",
            },
        )
        asset.tags.set([all_tags[name] for name in tags])
    ConsentText.objects.get_or_create(version=CONSENT[0], defaults={"text": CONSENT[1]})
    for name, body in TEMPLATES.items():
        MessageTemplate.objects.get_or_create(name=name, defaults={"body": body})
    links = _links_load(ctx)
    stats = _stats_rebuild()
    return {"content assets": len(library), "tracked links": links, "asset viewers": stats}


def _links_load(ctx: DemoContext) -> int:
    """Each lead that viewed an asset was sent a link to it; a third more links were never opened."""
    if TrackedLink.objects.exists():
        return TrackedLink.objects.count()
    assets = dict(ContentAsset.objects.values_list("slug", "pk"))
    views = (
        Event.objects.filter(type="content_viewed")
        .annotate(slug=KeyTextTransform("asset", "properties"))
        .values("lead_id", "slug")
        .annotate(n=Count("id"), first=Min("occurred_at"), last=Max("occurred_at"))
        .order_by("lead_id", "slug")
    )
    rows = [
        TrackedLink(
            token=secrets.token_urlsafe(12),
            asset_id=assets[view["slug"]],
            lead_id=view["lead_id"],
            created_at=view["first"] - timedelta(hours=1),
            opens=view["n"],
            first_opened_at=view["first"],
            last_opened_at=view["last"],
        )
        for view in views
        if view["slug"] in assets
    ]
    lead_ids = list(Lead.objects.filter(stage__in=["mil", "mql"]).values_list("pk", flat=True).order_by("pk"))
    rng, slugs, seen = ctx.rng, sorted(assets), {(row.lead_id, row.asset_id) for row in rows}
    for lead_id in rng.sample(lead_ids, k=min(len(lead_ids), len(rows) // 2)):
        asset_id = assets[rng.choice(slugs)]
        if (lead_id, asset_id) not in seen:
            seen.add((lead_id, asset_id))
            sent = ctx.now - timedelta(days=rng.uniform(1, 60))
            rows.append(
                TrackedLink(
                    token=secrets.token_urlsafe(12), asset_id=asset_id, lead_id=lead_id, created_at=sent
                )
            )
    TrackedLink.objects.bulk_create(rows, batch_size=2000)
    return len(rows)


def _stats_rebuild() -> int:
    """Rebuild the per-asset and per-tag view counters from the `content_viewed` events (the demo's
    events name their asset by slug). Returns the asset viewers."""
    assets = {asset.slug: asset for asset in ContentAsset.objects.prefetch_related("tags")}
    views = list(
        Event.objects.filter(type="content_viewed")
        .annotate(slug=KeyTextTransform("asset", "properties"))
        .values("lead_id", "slug")
        .annotate(n=Count("id"), first=Min("occurred_at"), last=Max("occurred_at"))
        .order_by()
    )
    AssetViewer.objects.all().delete()
    TagViewer.objects.all().delete()
    viewers: list[AssetViewer] = []
    by_tag: dict[tuple[int, int], TagViewer] = {}
    for view in views:
        asset = assets.get(view["slug"])
        if asset is None:
            continue
        viewers.append(
            AssetViewer(
                asset=asset,
                lead_id=view["lead_id"],
                views=view["n"],
                first_at=view["first"],
                last_at=view["last"],
            )
        )
        for tag in asset.tags.all():
            key = (tag.pk, view["lead_id"])
            row = by_tag.get(key)
            if row is None:
                by_tag[key] = TagViewer(
                    tag=tag,
                    lead_id=view["lead_id"],
                    views=view["n"],
                    first_at=view["first"],
                    last_at=view["last"],
                )
            else:
                row.views += view["n"]
                row.first_at, row.last_at = min(row.first_at, view["first"]), max(row.last_at, view["last"])
    AssetViewer.objects.bulk_create(viewers, batch_size=2000)
    TagViewer.objects.bulk_create(by_tag.values(), batch_size=2000)
    for asset in assets.values():
        mine = [v for v in viewers if v.asset_id == asset.pk]
        ContentAsset.objects.filter(pk=asset.pk).update(
            views=sum(v.views for v in mine), unique_viewers=len(mine)
        )
    return len(viewers)
