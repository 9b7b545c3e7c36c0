"""Message templates: merge fields rendered in a sandbox that reads only whitelisted lead fields."""

import re

import pytest

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
