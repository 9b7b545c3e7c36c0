"""Test data through factory-boy; Chinese names and companies via Faker's zh_CN locale."""

import factory
from django.contrib.auth import get_user_model
from django.utils.timezone import now as timezone_now

from leads.models import Event, Lead, Tag


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        django_get_or_create = ("username",)

    username = factory.Sequence(lambda n: f"sdr{n}")


class LeadFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Lead

    name = factory.Faker("name", locale="zh_CN")
    company = factory.Faker("company", locale="zh_CN")
    title = factory.Iterator(["市场总监", "IT经理", "采购经理", "总经理", "销售VP"])
    industry = factory.Iterator(["制造", "信息科技", "教育", "医疗", "零售"])
    phone = factory.Sequence(lambda n: f"+86138{n:08d}")
    source = "官网表单"


class TagFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Tag
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"topic:话题{n}")
    group = factory.LazyAttribute(lambda o: o.name.split(":", 1)[0] if ":" in o.name else "")
    label = factory.LazyAttribute(lambda o: o.name.split(":", 1)[-1])


class EventFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Event

    lead = factory.SubFactory(LeadFactory)
    type = "content_viewed"
    occurred_at = factory.LazyFunction(timezone_now)
    properties = factory.LazyFunction(dict)
