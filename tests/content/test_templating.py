"""Message templates: merge fields rendered in a sandbox that reads only whitelisted lead fields."""

import re

import pytest
from django.core.exceptions import ValidationError

from content.models import MessageTemplate
from content.services import message_template_save
from content.templating import TemplateRefused, template_check, template_context, template_render
from tests.factories import LeadFactory


@pytest.mark.django_db
def test_merge_fields_render_with_defaults():
    lead = LeadFactory(name="张伟", company="", industry="制造")
    body = (
        "{{ lead.name }}您好，为{{ lead.company|default:'贵司' }}准备的《{{ asset.title }}》："
        "{{ link }}{% if lead.industry == '制造' %}（制造业专版）{% endif %}"
    )
    context = template_context(
        lead=lead, link="https://t.cn/c/abc/", asset=type("A", (), {"title": "白皮书"})()
    )
    assert (
        template_render(body, context)
        == "张伟您好，为贵司准备的《白皮书》：https://t.cn/c/abc/（制造业专版）"
    )


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("{{ lead.phone }}", "{{ lead.phone }} is not available"),
        ("{{ lead.owner.password }}", "is not available"),
        ("{{ lead.__class__ }}", "may not begin with underscores"),
        ("{% if lead.email %}x{% endif %}", "{{ lead.email }} is not available"),
        ("{{ lead.name|default:lead.phone }}", "{{ lead.phone }} is not available"),
        ("{{ lead.name|safe }}", "the filter 'safe' is not allowed"),
        ("{% include 'admin/base.html' %}", "the template tag 'include' is not allowed"),
        ("{% debug %}", "the template tag 'debug' is not allowed"),
        ("{% load static %}", "does not compile"),
        ("{% if lead.name %}没有结束", "does not compile"),
        ("您好 {{ lead.name", "unclosed or stray tag"),
    ],
)
def test_the_sandbox_refuses_what_is_outside_the_whitelist(body, message):
    with pytest.raises(TemplateRefused, match=re.escape(message)):
        template_check(body)


@pytest.mark.django_db
def test_a_template_that_does_not_compile_is_refused_on_save(admin_client):
    with pytest.raises(TemplateRefused):
        message_template_save(template=MessageTemplate(name="坏模板", body="{% for x in lead %}{% endfor %}"))
    response = admin_client.post(
        "/admin/content/messagetemplate/add/",
        {"name": "坏模板", "body": "{{ lead.phone }}"},
        HTTP_ACCEPT_LANGUAGE="en",
    )
    assert response.status_code == 200 and "{{ lead.phone }} is not available" in response.content.decode()
    assert not MessageTemplate.objects.filter(name="坏模板").exists()
    response = admin_client.post(
        "/admin/content/messagetemplate/add/", {"name": "好模板", "body": "{{ lead.name }}"}
    )
    assert response.status_code == 302 and MessageTemplate.objects.filter(name="好模板").exists()


@pytest.mark.django_db
def test_whitelisted_filters_render_by_their_registered_names():
    lead = LeadFactory(name="张伟", company="苏州恒立精密机械有限公司")
    body = (
        "{{ lead.name|slice:':1' }}总，{{ lead.company|slice:'2:4' }}"
        "{{ lead.name|first }}{{ lead.name|length }}{{ lead.title|default:'您'|lower }}"
    )
    template_check(body)
    context = template_context(lead=lead)
    assert template_render(body, context) == f"张总，恒立张2{lead.title.lower()}"
    with pytest.raises(TemplateRefused, match="the filter 'slugify' is not allowed"):
        template_check("{{ lead.name|slugify }}")


@pytest.mark.django_db
def test_a_refused_template_cannot_be_saved_by_the_orm_either():
    with pytest.raises(TemplateRefused, match=re.escape("{{ lead.phone }} is not available")):
        MessageTemplate.objects.create(name="绕过", body="{{ lead.phone }}")
    good = MessageTemplate.objects.create(name="好", body="{{ lead.name|slice:':1' }}总您好")
    good.body = "{% include 'admin/base.html' %}"
    with pytest.raises(TemplateRefused):
        good.save()
    with pytest.raises(ValidationError) as refused:
        good.full_clean()
    assert "the template tag 'include' is not allowed" in refused.value.message_dict["body"][0]
    good.refresh_from_db()
    assert good.body == "{{ lead.name|slice:':1' }}总您好"
    assert not MessageTemplate.objects.filter(name="绕过").exists()
