"""The UI speaks Simplified Chinese by default, English on request, and every string is translated."""

import re
from pathlib import Path

import pytest

PO = Path(__file__).resolve().parent.parent / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"


def test_every_message_of_the_catalog_is_translated():
    text = PO.read_text(encoding="utf-8")
    entries = re.split(r"\n\n+", text)
    # An empty msgstr not continued on the next line, or a fuzzy entry, is untranslated.
    untranslated = [
        entry
        for entry in entries[1:]  # the first entry is the header
        if "#, fuzzy" in entry or re.search(r'^msgstr(\[\d\])? ""$(?!\n")', entry, re.M)
    ]
    assert not untranslated, "untranslated entries:\n\n" + "\n\n".join(untranslated[:5])
    assert PO.with_suffix(".mo").exists(), "run `make messages` to compile the catalog"


@pytest.mark.django_db
def test_admin_and_home_speak_chinese_by_default_and_english_on_request(admin_client, client):
    page = admin_client.get("/admin/leads/lead/").content.decode()
    assert "阶段" in page and "选择 线索 来修改" in page  # Django's "Select %s to change" with our model name
    assert "线索孵化" in client.get("/").content.decode()
    english = admin_client.get("/admin/leads/lead/", HTTP_ACCEPT_LANGUAGE="en").content.decode()
    assert "by stage" in english.lower() and "Select lead to change | nurture" in english
