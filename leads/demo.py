"""The demo data set that `make demo` shows: users, ~2,000 Chinese B2B leads and 90 days of events.

Everything is written through the real services (`lead_bulk_upsert`, `event_record_bulk`,
`lead_tags_stamp`, `lead_stage_set`), built deterministically from a seed, and idempotent: identities
make leads idempotent, deterministic `event_id`s make events idempotent, users and groups are
get-or-create, and tags and stage histories are written only for leads that have none yet.

Later issues add their own demo data by appending a loader to `DEMO_LOADERS`.
"""

from __future__ import annotations

import random
import string
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from functools import partial
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser, Group, Permission
from django.db import transaction
from django.db.models import Q
from django.utils.module_loading import import_string
from django.utils.timezone import localtime

from leads.identity import IdentityError, normalize_phone
from leads.models import IDENTITY_FIELDS, Event, Lead, LeadTag, Stage, StageChange, Tag
from leads.services import EventInput, event_record_bulk, lead_bulk_upsert, lead_stage_set
from leads.tagging import lead_tags_stamp, tags_get_or_create

DEMO_PASSWORD = "demo-pass-123"
DEMO_LEAD_COUNT = 2000
DEMO_DAYS = 90
BATCH_SIZE = 1000


@dataclass
class DemoContext:
    """What every loader gets: the instant the demo is built for and its own seeded generator."""

    now: datetime
    seed: int
    rng: random.Random


DemoLoader = Callable[[DemoContext], dict[str, int]]

# Loaders `demo_load` runs in order, each in its own transaction and with its own generator (seeded
# from the seed and the loader's path, so adding a loader never changes what the others build).
# Later issues append theirs, e.g. "content.demo.demo_content_load".
DEMO_LOADERS: list[str] = [
    "leads.demo.demo_users_load",
    "leads.demo.demo_leads_load",
    "content.demo.demo_content_load",
    "leads.demo.demo_pools_load",
    "scoring.demo.demo_scores_load",
    "sequences.demo.demo_sequences_load",
    "workspace.demo.demo_workspace_load",  # last: the day's work reads the scores and the sequences
]


def demo_load(*, now: datetime, seed: int = 2026) -> dict[str, int]:
    """Load the whole demo data set as of `now`; running it again changes no counts.

    Returns what the loaders report (counts by name), in loader order.
    """
    counts: dict[str, int] = {}
    for path in DEMO_LOADERS:
        loader: DemoLoader = import_string(path)
        ctx = DemoContext(now=now, seed=seed, rng=random.Random(f"{seed}:{path}"))
        with transaction.atomic():
            counts.update(loader(ctx))
    return counts


# --- Users and groups.

# username: (group, last name, first name)
DEMO_USERS: dict[str, tuple[str, str, str]] = {
    "marketer": ("marketer", "林", "晓雯"),
    "sdr1": ("sdr", "陈", "浩然"),
    "sdr2": ("sdr", "王", "思琪"),
    "manager": ("sdr_manager", "赵", "建国"),
}
# The product's apps (app labels). An app without models yet has no permissions; reloading the demo after
# a later issue migrates its models grants them.
NURTURE_APPS = ("leads", "content", "sequences", "scoring", "nurture_channels")
SDR_PERMISSIONS = (
    "view_lead",
    "change_lead",
    "view_tag",
    "view_leadtag",
    "add_leadtag",
    "change_leadtag",
    "delete_leadtag",
    "view_event",
    "add_event",
    "view_stagechange",
    "view_leadmerge",
)


def demo_users_load(ctx: DemoContext) -> dict[str, int]:
    """Groups `marketer`, `sdr`, `sdr_manager` with their permissions, and the four demo staff users.

    A user that already exists keeps its password: the demo password is set only on creation.
    """
    perms = Permission.objects.all()
    leads_perms = perms.filter(content_type__app_label="leads")
    group_perms = {
        "marketer": perms.filter(content_type__app_label__in=(*NURTURE_APPS, "django_celery_beat")),
        "sdr_manager": leads_perms
        | perms.filter(content_type__app_label__in=(*NURTURE_APPS, "workspace"), codename__startswith="view_")
        # The SLA agreement and who is available are the sales manager's to edit.
        | perms.filter(
            content_type__app_label="workspace",
            codename__in=("change_workspacesettings", "change_sdrprofile"),
        ),
        "sdr": leads_perms.filter(codename__in=SDR_PERMISSIONS),
    }
    groups: dict[str, Group] = {}
    for name, granted in group_perms.items():
        groups[name], _ = Group.objects.get_or_create(name=name)
        groups[name].permissions.set(granted)

    created = 0
    for username, (group, last_name, first_name) in DEMO_USERS.items():
        user, is_new = get_user_model().objects.get_or_create(
            username=username,
            defaults={"first_name": first_name, "last_name": last_name, "email": f"{username}@demo.nurture"},
        )
        if is_new:
            user.set_password(DEMO_PASSWORD)
            created += 1
        user.is_staff = True
        user.is_active = True
        user.save()
        user.groups.add(groups[group])
    return {"users": len(DEMO_USERS), "users_created": created, "groups": len(groups)}


# --- Vocabulary: what Chinese B2B marketers write and say (after the field articles the product grew from).


def _words(text: str) -> list[str]:
    return text.split()


def _pairs(text: str) -> list[tuple[str, str]]:
    return [(left, right) for left, _, right in (item.partition(":") for item in text.split())]


SURNAMES = _pairs(
    "王:wang 李:li 张:zhang 刘:liu 陈:chen 杨:yang 黄:huang 赵:zhao 吴:wu 周:zhou 徐:xu 孙:sun 马:ma "
    "朱:zhu 胡:hu 郭:guo 何:he 高:gao 林:lin 罗:luo 郑:zheng 梁:liang 谢:xie 宋:song 唐:tang 韩:han "
    "冯:feng 邓:deng 曹:cao 彭:peng 曾:zeng 肖:xiao 田:tian 董:dong 袁:yuan 潘:pan 蒋:jiang 蔡:cai "
    "杜:du 叶:ye 程:cheng 苏:su 魏:wei 丁:ding 任:ren 沈:shen 姚:yao 卢:lu 崔:cui 钟:zhong 谭:tan "
    "范:fan 金:jin 石:shi 廖:liao 贾:jia 夏:xia 方:fang 欧阳:ouyang 上官:shangguan"
)
GIVEN = _pairs(
    "伟:wei 芳:fang 娜:na 敏:min 静:jing 丽:li 强:qiang 磊:lei 军:jun 洋:yang 勇:yong 艳:yan 杰:jie "
    "涛:tao 明:ming 超:chao 霞:xia 平:ping 刚:gang 英:ying 华:hua 建:jian 文:wen 斌:bin 宇:yu 浩:hao "
    "凯:kai 鹏:peng 晨:chen 欣:xin 婷:ting 雪:xue 琳:lin 佳:jia 颖:ying 慧:hui 博:bo 瑞:rui 晓:xiao "
    "思:si 梓:zi 嘉:jia 海:hai 志:zhi 国:guo 春:chun 立:li 宁:ning 倩:qian 蕾:lei 峰:feng 辉:hui "
    "俊:jun 亮:liang 丹:dan 璐:lu 萍:ping 荣:rong 鑫:xin 昊:hao 天:tian 若:ruo 涵:han 可:ke 泽:ze"
)
CITIES = _words(
    "苏州 杭州 上海 深圳 广州 成都 武汉 南京 宁波 东莞 青岛 西安 合肥 厦门 天津 长沙 北京 无锡 佛山 重庆"
)
BRANDS = _pairs(
    "恒立:hengli 云栖:yunqi 华盛:huasheng 启明:qiming 博远:boyuan 中科:zhongke 鼎新:dingxin "
    "瑞丰:ruifeng 汇通:huitong 联创:lianchuang 金鹏:jinpeng 星河:xinghe 安泰:antai 鸿达:hongda "
    "睿思:ruisi 凯晟:kaisheng 易达:yida 新锐:xinrui 智源:zhiyuan 海纳:haina 天衡:tianheng "
    "远景:yuanjing 万嘉:wanjia 同创:tongchuang 德润:derun 宏图:hongtu 嘉禾:jiahe 力拓:lituo "
    "明略:minglue 青禾:qinghe 锦程:jincheng 蓝海:lanhai 昆仑:kunlun 长风:changfeng 君和:junhe "
    "思源:siyuan 华信:huaxin 卓越:zhuoyue 优品:youpin 康宁:kangning"
)
# industry: [(company-name suffix, domain suffix)]
INDUSTRIES: dict[str, list[tuple[str, str]]] = {
    "制造": _pairs(
        "精密机械有限公司:precision 智能装备股份有限公司:equip 新材料科技有限公司:material "
        "电子科技有限公司:electronic 汽车零部件有限公司:autoparts"
    ),
    "信息科技": _pairs(
        "数智科技有限公司:digital 软件技术有限公司:soft 信息技术有限公司:infotech 云计算有限公司:cloud"
    ),
    "教育": _pairs("教育科技有限公司:edu 职业培训学校:training 在线教育科技有限公司:online-edu"),
    "医疗": _pairs(
        "医疗器械有限公司:meddevice 生物医药股份有限公司:bio 医疗科技有限公司:medtech 健康管理有限公司:health"
    ),
    "零售": _pairs(
        "连锁商业有限公司:retail 电子商务有限公司:ecom 品牌管理有限公司:brand 新零售科技有限公司:newretail"
    ),
    "金融": _pairs("融资租赁有限公司:leasing 保险经纪有限公司:insurance 金融信息服务有限公司:fintech"),
    "物流": _pairs("供应链管理有限公司:supplychain 物流有限公司:logistics 国际货运代理有限公司:freight"),
}
INDUSTRY_WEIGHTS = {"制造": 26, "信息科技": 24, "教育": 10, "医疗": 10, "零售": 12, "金融": 9, "物流": 9}
COMPANY_SIZES = ["1-49", "50-199", "200-499", "500-999", "1000-4999", "5000+"]
# title: has buying authority
TITLES: dict[str, bool] = {
    "市场总监": True,
    "市场经理": False,
    "市场专员": False,
    "品牌经理": False,
    "IT经理": False,
    "信息化主管": False,
    "采购经理": False,
    "总经理": True,
    "副总裁": True,
    "CEO": True,
    "CTO": True,
    "运营主管": False,
    "私域运营专员": False,
    "销售VP": True,
    "销售经理": False,
    "电商运营经理": False,
    "数字化负责人": True,
    "增长负责人": True,
}
SOURCES = {"官网表单": 25, "直播报名": 15, "企微活码": 20, "导入": 15, "展会": 10, "内容下载": 15}
MOBILE_PREFIXES = _words(
    "138 139 135 136 137 150 151 152 158 159 186 187 188 177 176 199 189 180 181 133 153 166 "
    "130 131 132 155 156 185 182 183 191 198"
)
NEEDS = _words(
    "全渠道获客 私域运营 线索培育 营销自动化 客户画像 销售协同 数据分析 内容营销 会员运营 直播获客"
)
# form code (event property, as rules use it): tag label
FORMS = {
    "whitepaper": "白皮书",
    "case_study": "案例",
    "article": "文章",
    "webinar": "直播",
    "report": "报告",
    "template": "模板",
    "video": "视频",
    "trial": "试用",
}
# asset slug: (title, form code, topic); the content app's demo loader can create these assets.
DEMO_ASSETS: dict[str, tuple[str, str, str]] = {
    "wp-online-acquisition": ("线上获客白皮书：B2B 企业不见面也成交", "whitepaper", "线上获客白皮书"),
    "wp-lead-nurturing": ("线索培育场景落地指南", "whitepaper", "线索培育"),
    "wp-digital-factory": ("中小制造企业数字化营销白皮书", "whitepaper", "数字化转型"),
    "case-manufacturing": ("制造业案例：精密机械企业线索转化率提升 3 倍", "case_study", "线索培育"),
    "case-retail-private": ("零售品牌私域案例：企微 SOP 带来 40% 复购", "case_study", "私域运营"),
    "case-saas-mql": ("SaaS 企业案例：MQL 到 SQL 转化率提升 52%", "case_study", "销售协同"),
    "article-relative-sop": ("私域 SOP 怎么做：按客户时间轴的第 1、3、7 天", "article", "私域运营"),
    "article-bant": ("BANT 判断法：什么样的线索该交给销售", "article", "销售协同"),
    "article-journey": ("SaaS 增长基本功：客户旅程与价值销售", "article", "客户旅程"),
    "article-content-bait": ("内容即诱饵：用白皮书和案例换线索", "article", "内容营销"),
    "article-silent-users": ("沉默客户怎么激活：14 天未互动的 5 个话术", "article", "私域运营"),
    "report-martech": ("中国 B2B 营销技术趋势报告", "report", "营销自动化"),
    "template-sop-366": ("企微私域 SOP 模板（含 366 天话术）", "template", "私域运营"),
    "video-product-tour": ("5 分钟看懂线索培育平台", "video", "营销自动化"),
    "webinar-replay-live": ("直播回放：从报名到商机的 30 天", "webinar", "直播获客"),
    "trial-14-days": ("免费试用 14 天", "trial", "营销自动化"),
}
WEBINARS = {
    "live-acquisition": "直播获客实战：从报名到商机的 30 天",
    "private-sop-class": "企微私域 SOP 公开课",
    "factory-closed-door": "制造业数字化营销闭门会",
    "sdr-playbook": "SDR 跟进手册：如何在 2 小时内响应热线索",
}
EXPOS = ["中国 B2B 营销增长峰会·上海站", "工业数字化博览会·深圳", "SaaS 创新大会·杭州", "智能制造展·苏州"]
EMAIL_SUBJECTS = [
    "【白皮书】B2B 线上获客的 7 个打法",
    "本周四晚 8 点直播：私域 SOP 实操",
    "制造业客户是如何把线索转化率提升 3 倍的",
    "您的试用账号还有 3 天到期",
    "月刊｜B2B 增长案例精选",
]
MESSAGES_IN = [
    "你好，想了解一下你们的报价",
    "能发一份制造业的案例吗？",
    "我们现在用的是纷享销客，能打通吗？",
    "下周三下午方便电话沟通",
    "白皮书收到了，谢谢",
    "试用账号怎么开通？",
    "我们年底前要上线，时间比较紧",
    "需要先跟老板汇报一下",
    "有没有私有化部署方案？",
    "直播回放在哪里看？",
    "好的，收到",
    "企微的客户能自动打标签吗？",
]
MESSAGES_OUT = [
    "您好，我是您的专属顾问，有任何问题随时找我",
    "这是您要的《线上获客白皮书》，请查收",
    "本周四晚 8 点有一场直播，给您留了名额",
    "根据您的行业，推荐您看看这个案例",
    "方便的话约个 20 分钟的线上演示？",
    "您上次问的企微对接，我们已经支持了",
    "我们整理了一份 366 天的 SOP 模板，送给您",
]
CALL_OUTCOMES = ["有需求，约了演示", "决策人已确认，本季度有预算", "在比较两家供应商", "需求明确，要报价"]
WON_REASONS = ["签约：专业版年度订阅", "签约：企业版三年", "签约：私有化部署与实施服务"]
LOST_REASONS = ["选择了竞品", "预算冻结", "需求延后到明年", "决策人变动"]
RECYCLED_REASONS = ["暂无预算，退回培育", "联系不上，退回培育", "采购计划在半年以后，退回培育"]
STAGE_WEIGHTS = {
    Stage.MIL: 62,
    Stage.MQL: 13,
    Stage.SQL: 6,
    Stage.WON: 4,
    Stage.LOST: 4,
    Stage.RECYCLED: 5,
    Stage.RL: 6,
}


# --- Planning: everything below is drawn from the generator only, never from the database.


@dataclass
class _StagePlan:
    stage: str
    at: datetime
    reason: str
    amount: Decimal | None = None
    by: str = ""  # username
    actor: str = ""


@dataclass
class _LeadPlan:
    key: str
    data: dict[str, Any]
    first_at: datetime
    entry_stage: str = Stage.RL  # a lead that registered when it arrived is created as MIL
    events: list[tuple[str, datetime, dict[str, Any]]] = field(default_factory=list)
    tags: list[tuple[str, datetime, str]] = field(default_factory=list)  # name, at, source
    stages: list[_StagePlan] = field(default_factory=list)


def _pick(rng: random.Random, weights: dict[Any, int]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def _moment(rng: random.Random, now: datetime, days_ago: float) -> datetime:
    """An instant `days_ago` before `now`, at a plausible local office-or-evening hour, never after now."""
    day = localtime(now - timedelta(days=days_ago))
    hour = rng.choices(range(8, 23), weights=[2, 6, 8, 8, 5, 4, 7, 8, 7, 5, 3, 3, 4, 3, 1])[0]
    at = day.replace(hour=hour, minute=rng.randrange(60), second=rng.randrange(60), microsecond=0)
    # UTC, as the database keeps it: raw-SQL writers (tag stamping) pass datetimes through as they are.
    return min(at, now - timedelta(minutes=rng.randint(3, 90))).astimezone(UTC)


class _Uniques:
    """Draws values that no other demo lead has."""

    def __init__(self) -> None:
        self.seen: set[str] = set()

    def take(self, draw: Callable[[], str]) -> str:
        while True:
            value = draw()
            if value not in self.seen:
                self.seen.add(value)
                return value


def _phone(rng: random.Random) -> str:
    while True:
        raw = rng.choice(MOBILE_PREFIXES) + "".join(rng.choices(string.digits, k=8))
        try:
            return normalize_phone(raw)
        except IdentityError:
            continue


def _email(rng: random.Random, person: str, domain: str) -> str:
    """A work address at the company's domain, or a personal QQ / 163 one when `domain` is empty."""
    if domain:
        return f"{person}{rng.choice(['', '', rng.randint(1, 99)])}@{domain}"
    if rng.random() < 0.5:
        return f"{rng.randint(10**7, 10**10)}@qq.com"
    return f"{person.replace('.', '')}{rng.randint(1, 999)}@163.com"


def _token(rng: random.Random, prefix: str, length: int) -> str:
    """A WeCom external user id (`wm…`) or WeChat unionid (`o…`) lookalike."""
    return prefix + "".join(rng.choices(string.ascii_letters + string.digits + "_-", k=length))


def _companies(rng: random.Random, count: int) -> list[dict[str, str]]:
    combos = [
        (brand, suffix, ind)
        for ind, suffixes in INDUSTRIES.items()
        for suffix in suffixes
        for brand in BRANDS
    ]
    weights = [INDUSTRY_WEIGHTS[ind] / len(INDUSTRIES[ind]) for _, _, ind in combos]
    chosen: dict[tuple[str, str], dict[str, str]] = {}
    while len(chosen) < count:
        (brand, brand_py), (suffix, suffix_en), industry = rng.choices(combos, weights=weights)[0]
        if (brand, suffix) in chosen:
            continue
        city = rng.choice(CITIES)
        chosen[(brand, suffix)] = {
            "company": f"{city}{brand}{suffix}",
            "industry": industry,
            "company_size": rng.choices(COMPANY_SIZES, weights=[18, 30, 22, 12, 12, 6])[0],
            "domain": f"{brand_py}-{suffix_en}.com",
            "city": city,
        }
    return list(chosen.values())


def _lead_plans(ctx: DemoContext, count: int) -> list[_LeadPlan]:
    rng, now = ctx.rng, ctx.now
    companies = _companies(rng, count // 5)
    uniques = _Uniques()
    plans = []
    for index in range(count):
        company = rng.choice(companies)
        surname, surname_py = rng.choice(SURNAMES)
        given = rng.sample(GIVEN, rng.choice([1, 2, 2]))
        given_py = "".join(py for _, py in given)
        source = _pick(rng, SOURCES)
        title = rng.choice(list(TITLES))
        identity_odds = {
            # source: (phone, email, wecom, unionid)
            "官网表单": (1.0, 0.6, 0.2, 0.1),
            "直播报名": (1.0, 0.3, 0.3, 0.2),
            "企微活码": (0.4, 0.1, 1.0, 0.3),
            "导入": (0.8, 0.5, 0.0, 0.0),
            "展会": (0.95, 0.6, 0.3, 0.0),
            "内容下载": (0.5, 0.9, 0.0, 0.2),
        }[source]
        phone, email, wecom, unionid = (rng.random() < odds for odds in identity_odds)
        email = email or not (phone or wecom or unionid)
        data: dict[str, Any] = {
            "name": surname + "".join(ch for ch, _ in given),
            "company": company["company"],
            "title": title,
            "industry": company["industry"] if rng.random() < 0.9 else "",
            "company_size": company["company_size"] if rng.random() < 0.8 else "",
            "source": source,
            "properties": {"city": company["city"]},
            "consent": rng.random() < 0.85,
            "consent_version": "2025-01",
        }
        if phone:
            data["phone"] = uniques.take(partial(_phone, rng))
        if email:
            domain = company["domain"] if rng.random() < 0.7 else ""
            data["email"] = uniques.take(partial(_email, rng, f"{given_py}.{surname_py}", domain))
        if wecom:
            data["wecom_external_userid"] = uniques.take(partial(_token, rng, "wm", 30))
        if unionid:
            data["wechat_unionid"] = uniques.take(partial(_token, rng, "o", 27))

        stage = Stage.RL
        if phone or wecom:
            stage = Stage.RL if source == "导入" and rng.random() < 0.6 else _pick(rng, STAGE_WEIGHTS)
        deep = stage in (Stage.SQL, Stage.WON, Stage.LOST, Stage.RECYCLED)
        if deep:
            data["external_id"] = f"XSY-{ctx.seed}-{index:05d}"
        if stage != Stage.RL and (deep or stage == Stage.MQL or source == "企微活码"):
            data["owner"] = rng.choice(["sdr1", "sdr2"])
        bant = {
            Stage.RL: 0,
            Stage.MIL: rng.choice([0, 0, 1]),
            Stage.MQL: rng.choice([1, 2]),
            Stage.RECYCLED: rng.choice([0, 1, 2]),
        }.get(stage, rng.choice([3, 3, 4]))
        flags = ["bant_need", "bant_budget", "bant_timeline", "bant_authority"]
        if TITLES[title]:
            flags = ["bant_authority", *flags[:3]]
        for flag in flags[:bant]:
            data[flag] = True

        start = {Stage.RL: 0, Stage.MIL: 0, Stage.MQL: 12}.get(stage, 35)
        plan = _LeadPlan(key=f"{ctx.seed}-{index:05d}", data=data, first_at=now)
        _journey(rng, now, plan, stage, days_ago=rng.uniform(start + 0.5, DEMO_DAYS))
        if stage == Stage.RECYCLED:
            # Returned to nurturing, as the workspace does it: the SDR who returned it no longer owns it,
            # so when it turns hot again it is back in the queue for any SDR to claim.
            data.pop("owner", None)
        plans.append(plan)
    return plans


def _journey(rng: random.Random, now: datetime, plan: _LeadPlan, stage: str, *, days_ago: float) -> None:
    """Fill the lead's events, tags and stage history along one plausible timeline."""
    data = plan.data
    middle = {Stage.RL: (0, 3), Stage.MIL: (2, 8), Stage.MQL: (6, 14)}.get(stage, (10, 20))
    times = sorted(_moment(rng, now, rng.uniform(0, days_ago)) for _ in range(rng.randint(*middle)))
    t0 = min([_moment(rng, now, days_ago), *times]) - timedelta(minutes=5)
    plan.first_at = t0
    events = plan.events
    source = data["source"]
    if source == "官网表单":
        events.append(
            (
                "form_submitted",
                t0,
                {"form": rng.choice(["预约演示", "联系我们", "申请报价"]), "page": "/demo/"},
            )
        )
    elif source == "直播报名":
        slug = rng.choice(list(WEBINARS))
        events.append(("webinar_registered", t0, {"webinar": slug, "title": WEBINARS[slug]}))
        if rng.random() < 0.6:
            events.append(
                ("webinar_attended", t0 + timedelta(days=2), {"webinar": slug, "title": WEBINARS[slug]})
            )
    elif source == "企微活码":
        state = rng.choice(["活码-官网", "活码-展会", "活码-直播间", "活码-公众号"])
        events.append(("wecom_added", t0, {"state": state, "user_id": data.get("owner") or "marketer"}))
    elif source == "展会":
        events.append(("form_submitted", t0, {"form": "展会扫码", "expo": rng.choice(EXPOS)}))
    elif source == "内容下载":
        slug = rng.choice([s for s, (_, form, _) in DEMO_ASSETS.items() if form in ("whitepaper", "report")])
        events.append(("form_submitted", t0, {"form": "资料下载", "asset": slug}))
        _content_view(plan, slug, t0 + timedelta(minutes=1))
    if data.get("phone") and source != "导入":
        events.append(("registered", t0 + timedelta(seconds=30), {"method": "手机号", "source": source}))

    for at in times:
        _middle_event(rng, plan, at)

    if data.get("industry"):
        plan.tags.append((f"industry:{data['industry']}", t0, "import"))
    if stage != Stage.RL:
        for need in rng.sample(NEEDS, rng.choice([0, 1, 1, 2])):
            plan.tags.append((f"need:{need}", t0, "form"))
    _stage_history(rng, plan, stage, times or [t0])
    # Follow-ups planned a day or two after a recent touch would lie in the future.
    latest = now - timedelta(minutes=1)
    plan.events = sorted(((kind, min(at, latest), props) for kind, at, props in events), key=lambda e: e[1])
    for step in plan.stages:
        step.at = min(step.at, latest)


def _content_view(plan: _LeadPlan, slug: str, at: datetime) -> None:
    title, form, topic = DEMO_ASSETS[slug]
    plan.events.append(("content_viewed", at, {"asset": slug, "title": title, "form": form, "topic": topic}))
    plan.tags += [(f"topic:{topic}", at, "content"), (f"form:{FORMS[form]}", at, "content")]


def _middle_event(rng: random.Random, plan: _LeadPlan, at: datetime) -> None:
    data = plan.data
    choices = {"content_viewed": 30, "link_clicked": 12}
    if data.get("email"):
        choices["email_opened"] = 15
    if data.get("wecom_external_userid"):
        choices.update(message_in=12, message_out=14)
    if data.get("phone"):
        choices["webinar_registered"] = 5
    kind = _pick(rng, choices)
    if kind == "content_viewed":
        _content_view(plan, rng.choice(list(DEMO_ASSETS)), at)
    elif kind == "link_clicked":
        slug = rng.choice(list(DEMO_ASSETS))
        channel = "wecom" if data.get("wecom_external_userid") else rng.choice(["sms", "email", "wechat_oa"])
        url = f"https://www.nurture-demo.cn/c/{slug}?utm_source={channel}"
        plan.events.append(("link_clicked", at, {"url": url, "asset": slug, "channel": channel}))
    elif kind == "email_opened":
        plan.events.append(("email_opened", at, {"subject": rng.choice(EMAIL_SUBJECTS)}))
    elif kind in ("message_in", "message_out"):
        texts = MESSAGES_IN if kind == "message_in" else MESSAGES_OUT
        plan.events.append((kind, at, {"text": rng.choice(texts), "channel": "wecom"}))
    else:
        slug = rng.choice(list(WEBINARS))
        plan.events.append(("webinar_registered", at, {"webinar": slug, "title": WEBINARS[slug]}))
        if rng.random() < 0.5:
            plan.events.append(
                ("webinar_attended", at + timedelta(hours=30), {"webinar": slug, "title": WEBINARS[slug]})
            )


def _stage_history(rng: random.Random, plan: _LeadPlan, stage: str, times: list[datetime]) -> None:
    """Plan the stage changes after entry: MQL halfway through the journey, SQL at three quarters, the
    outcome after the last touch."""
    if stage == Stage.RL:
        return
    plan.entry_stage = Stage.MIL
    owner = plan.data.get("owner", "")
    if stage == Stage.MIL:
        return
    mql_at = times[len(times) // 2] + timedelta(minutes=10)
    plan.stages.append(_StagePlan(Stage.MQL, mql_at, "行业与需求匹配，有采购计划", actor="engine"))
    if rng.random() < 0.5:
        plan.events.append(("trial_started", mql_at - timedelta(minutes=5), {"plan": "专业版", "days": 14}))
    if stage == Stage.MQL:
        return
    if stage == Stage.RECYCLED and rng.random() < 0.5:
        plan.stages.append(
            _StagePlan(Stage.RECYCLED, times[-1] + timedelta(hours=2), rng.choice(RECYCLED_REASONS), by=owner)
        )
        return
    sql_at = times[len(times) * 3 // 4] + timedelta(minutes=20)
    call = {"by": owner, "minutes": rng.randint(5, 40), "outcome": rng.choice(CALL_OUTCOMES)}
    plan.events.append(("call_logged", sql_at - timedelta(minutes=15), call))
    plan.stages.append(_StagePlan(Stage.SQL, sql_at, "SDR 确认：预算、决策人、需求明确", by=owner))
    if stage == Stage.SQL:
        return
    end_at = times[-1] + timedelta(hours=3)
    amount = Decimal(rng.randrange(30, 600) * 1000)
    reasons = {Stage.WON: WON_REASONS, Stage.LOST: LOST_REASONS, Stage.RECYCLED: RECYCLED_REASONS}[stage]
    if stage == Stage.RECYCLED:
        plan.stages.append(_StagePlan(stage, end_at, rng.choice(reasons), by=owner))
    else:
        plan.stages.append(_StagePlan(stage, end_at, rng.choice(reasons), amount=amount, actor="crm"))


# --- Writing.


def demo_leads_load(ctx: DemoContext) -> dict[str, int]:
    """About 2,000 leads with identities, owners, BANT, tags, stage histories and 90 days of events."""
    plans = _lead_plans(ctx, DEMO_LEAD_COUNT)
    users = {u.username: u for u in get_user_model().objects.filter(username__in=DEMO_USERS)}
    lead_ids: list[int] = []
    created_ids: set[int] = set()
    for batch in _chunks(plans, BATCH_SIZE):
        known = _identities_known(batch)
        items = [_payload(plan, users, known) for plan in batch]
        results = lead_bulk_upsert(items=items, why="demo", now=ctx.now)
        errors = [r.as_dict() for r in results if r.status == "error"]
        if errors:
            raise RuntimeError(f"demo leads rejected: {errors[:3]}")
        lead_ids += [r.id for r in results]  # type: ignore[misc]
        created_ids.update(r.id for r in results if r.status == "created")  # type: ignore[misc]
    by_key = dict(zip((plan.key for plan in plans), lead_ids, strict=True))

    # The service stamps creation with the wall clock; a demo lead arrived (and consented) at its first touch.
    fresh = [
        Lead(pk=by_key[p.key], created_at=p.first_at, consent_at=p.first_at if p.data["consent"] else None)
        for p in plans
        if by_key[p.key] in created_ids
    ]
    Lead.objects.bulk_update(fresh, ["created_at", "consent_at"], batch_size=500)

    events_created = _events_record(ctx, plans, by_key)
    tagged = set(LeadTag.objects.filter(lead_id__in=lead_ids).values_list("lead_id", flat=True))
    stamped = _tags_stamp(
        [(by_key[p.key], tag) for p in plans if by_key[p.key] not in tagged for tag in p.tags]
    )
    changed = set(StageChange.objects.filter(lead_id__in=lead_ids).values_list("lead_id", flat=True))
    stage_changes = _stages_set(
        [(by_key[p.key], p.stages) for p in plans if by_key[p.key] not in changed], users
    )
    return {
        "leads": Lead.objects.count(),
        "leads_created": len(created_ids),
        "events": Event.objects.count(),
        "events_created": events_created,
        "tags": Tag.objects.count(),
        "lead_tags": LeadTag.objects.count(),
        "lead_tags_stamped": stamped,
        "stage_changes": StageChange.objects.count(),
        "stage_changes_created": stage_changes,
    }


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _identities_known(plans: Sequence[_LeadPlan]) -> set[tuple[str, str]]:
    """The (field, value) identities of these plans that some lead already has."""
    query = Q()
    for name in IDENTITY_FIELDS:
        values = {plan.data[name] for plan in plans if plan.data.get(name)}
        if values:
            query |= Q(**{f"{name}__in": values})
    rows = Lead.objects.filter(query).values_list(*IDENTITY_FIELDS)
    return {(name, value) for row in rows for name, value in zip(IDENTITY_FIELDS, row, strict=True) if value}


def _payload(
    plan: _LeadPlan, users: dict[str, AbstractBaseUser], known: set[tuple[str, str]]
) -> dict[str, Any]:
    data = dict(plan.data)
    if data.get("owner"):
        data["owner"] = users.get(data["owner"])
    # Only a new lead gets its entry stage: a reload must not rewind a lead the funnel has moved on.
    if not any((name, data.get(name)) in known for name in IDENTITY_FIELDS):
        data["stage"] = plan.entry_stage
    return data


def _events_record(ctx: DemoContext, plans: list[_LeadPlan], by_key: dict[str, int]) -> int:
    items = [
        EventInput(
            type=kind,
            occurred_at=at,
            properties=properties,
            event_id=f"demo-{plan.key}-{number:03d}",
            lead_id=by_key[plan.key],
            identity=None,
            source="demo",
        )
        for plan in plans
        for number, (kind, at, properties) in enumerate(plan.events)
    ]
    created = 0
    for batch in _chunks(items, BATCH_SIZE):
        statuses = event_record_bulk(items=batch, now=ctx.now)
        created += sum(1 for status in statuses if status["status"] == "created")
    return created


def _tags_stamp(stamps: list[tuple[int, tuple[str, datetime, str]]]) -> int:
    """Stamp each (lead, tag) as often as planned, at about the planned times, in few statements.

    `lead_tags_stamp` adds one per pair per call, so the n-th stamp of every pair goes in round n;
    within a round, pairs are grouped by source and local day and stamped at that group's latest time.
    """
    tags = tags_get_or_create(names={name for _, (name, _, _) in stamps})
    seen: dict[tuple[int, int], int] = defaultdict(int)
    groups: dict[tuple[int, str, Any], list[tuple[int, int, datetime]]] = defaultdict(list)
    for lead_id, (name, at, source) in sorted(stamps, key=lambda stamp: stamp[1][1]):
        pair = (lead_id, tags[name].pk)
        seen[pair] += 1
        groups[(seen[pair], source, localtime(at).date())].append((*pair, at))
    for key in sorted(groups, key=lambda k: (k[0], k[2], k[1])):
        rows = groups[key]
        at = max(row[2] for row in rows)
        for batch in _chunks(rows, BATCH_SIZE):
            lead_tags_stamp(pairs=[(lead_id, tag_id) for lead_id, tag_id, _ in batch], source=key[1], now=at)
    return len(stamps)


def _stages_set(histories: list[tuple[int, list[_StagePlan]]], users: dict[str, AbstractBaseUser]) -> int:
    leads = Lead.objects.in_bulk([lead_id for lead_id, stages in histories if stages])
    created = 0
    for lead_id, stages in histories:
        for step in stages:
            change = lead_stage_set(
                lead=leads[lead_id],
                stage=step.stage,
                reason=step.reason,
                amount=step.amount,
                by=users.get(step.by),
                actor=step.actor,
                now=step.at,
            )
            created += change is not None
    return created


# --- Pools.


def demo_pools_load(ctx: DemoContext) -> dict[str, int]:
    """Evaluate the default pools over the demo leads, as the first tick would."""
    from leads.models import Pool, PoolMembership
    from leads.pools import pools_tick

    pools_tick(ctx.now)
    return {
        f"pool_{pool.slug}": PoolMembership.objects.filter(pool=pool, left_at__isnull=True).count()
        for pool in Pool.objects.order_by("family", "priority", "slug")
    }
