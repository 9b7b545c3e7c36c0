"""Import of stock leads (CSV/XLSX) through the admin: preview (dry run), confirm, row-by-row report."""

import codecs
import io
from datetime import UTC, datetime

import openpyxl
import pytest
import tablib
from django.contrib.auth.models import Permission
from django.contrib.messages import get_messages
from django.core.files.uploadedfile import SimpleUploadedFile

from leads.imports import ImportFileError, LeadResource, lead_import
from leads.models import Lead, LeadMerge, LeadTag, Tag
from leads.services import lead_tags_change
from tests.factories import LeadFactory, UserFactory

IMPORT_URL = "/admin/leads/lead/import/"
T0 = datetime(2025, 3, 1, 2, 0, tzinfo=UTC)

CSV_HEADER = "external_id,name,company,title,industry,company_size,phone,email,source,tags\n"
CSV_ROWS = [
    # line 2: a new lead with two tags
    ',张伟,华东精密,IT经理,制造,200-500,13900139000,,展会,"industry:制造, need:全渠道获客"\n',
    # line 3: a phone that is no mobile number
    ",李娜,西部物流,,,,12345,,展会,\n",
    # line 4: no identity at all
    ",王芳,某某公司,,,,,,展会,\n",
    # line 5: line 2's person again, typed differently, with an email: one lead
    ",张伟,,,,,139 0013 9000,ZW@Example.com,,industry:制造\n",
    # line 6: the phone of an existing lead: that lead is updated
    ",,新名字科技,,,,+86-138-0013-8001,,,\n",
    # line 7: a broken email
    ",赵磊,,,,,,not-an-email,,\n",
]


@pytest.fixture
def marketer(db):
    user = UserFactory(username="marketer", is_staff=True)
    user.user_permissions.set(Permission.objects.filter(content_type__app_label="leads"))
    return user


@pytest.fixture
def web(client, marketer):
    client.force_login(marketer)
    client.defaults["HTTP_ACCEPT_LANGUAGE"] = "en"
    return client


@pytest.fixture
def existing(db):
    lead = LeadFactory(name="老客户", company="旧公司", phone="+8613800138001", email=None)
    lead_tags_change(lead=lead, add=["industry:制造"], now=T0)
    return lead


def _csv(rows=CSV_ROWS, header=CSV_HEADER) -> bytes:
    return (header + "".join(rows)).encode()


def _xlsx(headers: list[str], rows: list[list[object]]) -> bytes:
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(headers)
    for row in rows:
        sheet.append(row)
    out = io.BytesIO()
    book.save(out)
    return out.getvalue()


def _upload(web, content: bytes, name: str):
    return web.post(IMPORT_URL, {"file": SimpleUploadedFile(name, content)})


def _confirm(web, preview):
    form = preview.context["confirm_form"]
    return web.post(IMPORT_URL, {**form.initial, "confirm": "1"})


def _state() -> tuple:
    return (
        Lead.objects.count(),
        Tag.objects.count(),
        sorted(LeadTag.objects.values_list("lead_id", "tag_id", "count")),
        LeadMerge.objects.count(),
        sorted(Lead.objects.values_list("id", "name", "company", "phone", "email")),
    )


def _by_line(report) -> dict:
    return {row.line: row for row in report.rows}


@pytest.mark.django_db
def test_csv_preview_writes_nothing_then_confirm_lands_the_good_rows(web, existing):
    before = _state()

    preview = _upload(web, _csv(), "leads.csv")

    assert preview.status_code == 200
    assert _state() == before  # the dry run wrote nothing
    report = preview.context["report"]
    assert report.dry_run
    rows = _by_line(report)
    assert {line: row.status for line, row in rows.items()} == {
        2: "created",
        3: "error",
        4: "error",
        5: "updated",
        6: "updated",
        7: "error",
    }
    assert rows[5].same_as_line == 2
    assert rows[6].lead_id == existing.pk
    assert (report.created, report.updated, report.failed) == (1, 2, 3)
    content = preview.content.decode()
    assert "Confirm import" in content

    done = _confirm(web, preview)

    assert done.status_code == 200
    report = done.context["report"]
    assert not report.dry_run
    rows = _by_line(report)
    # The report says which rows failed and why, with the column as the file names it.
    assert rows[3].errors[0][0] == "phone" and "not a valid phone number" in rows[3].errors[0][1]
    assert rows[4].errors[0][0] == "" and "give at least one identity" in rows[4].errors[0][1]
    assert rows[7].errors[0][0] == "email" and "email" in rows[7].errors[0][1]
    page = done.content.decode()
    for line in (3, 4, 7):
        assert f'data-line="{line}" data-status="error"' in page
    assert "give at least one identity" in page

    # The good rows landed: lines 2 and 5 are one lead, line 6 updated the existing lead.
    assert Lead.objects.count() == 2
    wei = Lead.objects.get(phone="+8613900139000")
    assert rows[2].lead_id == rows[5].lead_id == wei.pk
    assert (wei.name, wei.company, wei.email, wei.source, wei.industry) == (
        "张伟",
        "华东精密",
        "zw@example.com",
        "展会",
        "制造",
    )
    # One batch stamps a (lead, tag) pair once, however many rows of the person carry the tag.
    assert dict(wei.lead_tags.values_list("tag__name", "count")) == {"industry:制造": 1, "need:全渠道获客": 1}
    existing.refresh_from_db()
    assert (existing.name, existing.company) == ("老客户", "新名字科技")  # blank cells erase nothing
    assert dict(existing.lead_tags.values_list("tag__name", "count")) == {"industry:制造": 1}
    assert not Lead.objects.filter(name__in=["李娜", "王芳", "赵磊"]).exists()


@pytest.mark.django_db
def test_xlsx_with_chinese_headers(web, existing):
    content = _xlsx(
        ["姓名", "公司", "职位", "行业", "公司规模", "手机", "邮箱", "来源", "标签", "备注"],
        [
            [
                "陈静",
                "北方软件",
                "CTO",
                "信息科技",
                "50-200",
                13700137000,
                None,
                "老客户名单",
                "need:私域运营",
                "x",
            ],
            ["周强", "南方制造", None, None, None, "1370013", None, None, None, None],
            ["老客户", None, "采购经理", None, None, 13800138001, "old@example.com", None, None, None],
            [None, None, None, None, None, None, None, None, None, None],  # a blank line
            ["陈静", None, None, None, None, "+86 137 0013 7000", None, None, None, None],
        ],
    )
    before = _state()

    preview = _upload(web, content, "存量线索.xlsx")

    assert _state() == before
    report = preview.context["report"]
    assert report.ignored_columns == ["备注"]
    rows = _by_line(report)
    assert {line: row.status for line, row in rows.items()} == {
        2: "created",
        3: "error",
        4: "updated",
        6: "updated",
    }
    assert rows[3].errors[0][0] == "手机"  # the column as the file names it
    assert rows[6].same_as_line == 2

    done = _confirm(web, preview)

    assert done.context["report"].failed == 1
    jing = Lead.objects.get(phone="+8613700137000")
    assert (jing.name, jing.company, jing.title, jing.industry, jing.company_size, jing.source) == (
        "陈静",
        "北方软件",
        "CTO",
        "信息科技",
        "50-200",
        "老客户名单",
    )
    assert list(jing.lead_tags.values_list("tag__name", flat=True)) == ["need:私域运营"]
    existing.refresh_from_db()
    assert (existing.title, existing.email) == ("采购经理", "old@example.com")
    assert Lead.objects.count() == 2


@pytest.mark.django_db
def test_rows_that_join_two_people_merge_them(db):
    content = _csv(
        [
            ",甲,,,,,13900139001,,,\n",
            ",甲,,,,,,jia@example.com,,\n",
            ",甲,,,,,13900139001,jia@example.com,,\n",
        ]
    )

    report = lead_import(content=content, file_name="a.csv", dry_run=False)

    lead = Lead.objects.get()
    assert (lead.phone, lead.email) == ("+8613900139001", "jia@example.com")
    assert [row.lead_id for row in report.rows] == [lead.pk] * 3
    assert [row.same_as_line for row in report.rows] == [None, 2, 2]
    assert LeadMerge.objects.get().survivor == lead


@pytest.mark.django_db
def test_dry_run_writes_nothing_even_for_merges(existing):
    other = LeadFactory(phone=None, email="old@example.com")
    before = _state()

    report = lead_import(
        content=_csv([",,,,,,13800138001,old@example.com,,industry:新\n"]), file_name="a.csv", dry_run=True
    )

    assert report.rows[0].status == "updated"
    assert report.rows[0].merged_ids == [other.pk]
    assert _state() == before


@pytest.mark.django_db
def test_import_is_set_based_in_batches(monkeypatch, django_assert_max_num_queries):
    monkeypatch.setattr("leads.imports.BATCH_SIZE", 100)
    rows = [f',客户{i},公司{i},,,,139{i:08d},,导入,"topic:t{i % 3}"\n' for i in range(250)]

    with django_assert_max_num_queries(40):  # a few statements per batch, not one per row
        report = lead_import(content=_csv(rows), file_name="big.csv", dry_run=False)

    assert report.created == 250
    assert Lead.objects.count() == 250
    assert LeadTag.objects.count() == 250


@pytest.mark.django_db
def test_gbk_csv_from_excel_is_read(db):
    content = (CSV_HEADER + ",孙丽,华南电子,,,,13600136000,,,\n").encode("gb18030")

    report = lead_import(content=content, file_name="excel.csv", dry_run=False)

    assert report.created == 1
    assert Lead.objects.get().name == "孙丽"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("content", "name", "error"),
    [
        (b"name,company\n\xe5\xbc\xa0,x\n", "a.csv", "no identity column"),
        (b"whatever", "a.pdf", ".csv or .xlsx"),
        (b"not a zip file", "a.xlsx", "cannot be read"),
    ],
)
def test_unreadable_files_are_refused_with_a_reason(web, content, name, error):
    response = _upload(web, content, name)

    assert response.status_code == 200
    assert "report" not in response.context
    assert error in " ".join(response.context["form"].errors["file"])
    with pytest.raises(ImportFileError):
        lead_import(content=content, file_name=name, dry_run=True)


@pytest.mark.django_db
def test_a_file_with_only_bad_rows_cannot_be_confirmed(web):
    response = _upload(web, _csv([",王芳,某某公司,,,,,,展会,\n"]), "bad.csv")

    assert response.context["report"].failed == 1
    assert "Confirm import" not in response.content.decode()


@pytest.mark.django_db
def test_confirm_with_a_forged_file_name_is_refused(web):
    response = web.post(
        IMPORT_URL,
        {"stored_name": "../../settings.csv", "original_name": "x.csv", "confirm": "1"},
        follow=True,
    )

    assert response.redirect_chain[-1][0] == IMPORT_URL
    assert not Lead.objects.exists()


@pytest.mark.django_db
def test_import_needs_add_and_change_permission(client):
    viewer = UserFactory(username="viewer", is_staff=True)
    viewer.user_permissions.set(Permission.objects.filter(codename="view_lead"))
    client.force_login(viewer)

    assert client.get(IMPORT_URL).status_code == 403
    changelist = client.get("/admin/leads/lead/")
    assert changelist.status_code == 200
    assert IMPORT_URL not in changelist.content.decode()


@pytest.mark.django_db
def test_the_lead_list_links_to_the_import(web):
    assert f'href="{IMPORT_URL}"' in web.get("/admin/leads/lead/").content.decode()


@pytest.mark.django_db
def test_blank_templates_and_export_round_trip(web, existing):
    template = web.get("/admin/leads/lead/import/template.xlsx")
    assert template.status_code == 200
    sheet = openpyxl.load_workbook(io.BytesIO(template.content)).active
    headers = [cell.value for cell in next(sheet.rows)]
    assert headers[:4] == ["external_id", "姓名", "公司", "职位"] and "手机" in headers

    csv_template = web.get("/admin/leads/lead/import/template.csv").content
    assert csv_template.startswith(codecs.BOM_UTF8)  # Excel opens it as UTF-8
    filled = csv_template + ",孙丽,华南电子,,,,13600136000,,,,,\r\n".encode()
    assert lead_import(content=filled, file_name="filled.csv", dry_run=True).created == 1

    exported = LeadResource().export(queryset=Lead.objects.all())
    assert exported.dict[0]["phone"] == "+8613800138001"
    assert exported.dict[0]["tags"] == "industry:制造"
    Lead.objects.all().delete()

    report = lead_import(content=exported.export("csv").encode(), file_name="export.csv", dry_run=False)

    assert report.created == 1
    lead = Lead.objects.get()
    assert (lead.name, lead.phone) == ("老客户", "+8613800138001")
    assert list(lead.lead_tags.values_list("tag__name", flat=True)) == ["industry:制造"]
    assert isinstance(exported, tablib.Dataset)

    form = web.get("/admin/leads/lead/export/").context["form"]
    choices = dict((label, value) for value, label in form.fields["format"].choices)
    data = {"format": choices["csv"], "resource": 0}
    data.update({name: "on" for name in form.fields if name.startswith("leadresource_")})
    download = web.post("/admin/leads/lead/export/", data)
    assert download.status_code == 200
    assert download.get("Content-Disposition"), [str(m) for m in get_messages(download.wsgi_request)]
    text = download.content.decode("utf-8-sig")
    assert text.splitlines()[0].startswith("external_id,name,company")
    assert "老客户" in text and "industry:制造" in text
