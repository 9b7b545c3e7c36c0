"""Import of stock leads from CSV and XLSX files, and their export in the same columns.

Files are read with django-import-export's formats (tablib). Each row is validated by the API's
`LeadWriteSerializer(require_identity=True)`, so a row and an API call with the same identities land
on the same lead; the good rows then go through `lead_bulk_upsert` in batches (set-based: a few
statements per batch, not one save per row). django-import-export's own row-by-row import
(`ImportMixin`, one `save()` per instance) is not used: it cannot match on several identities nor merge.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from contextlib import nullcontext
from dataclasses import dataclass, field
from datetime import date, datetime, time
from pathlib import PurePath
from typing import Any

import tablib
from django.db import transaction
from django.db.models import Prefetch, QuerySet
from django.utils.timezone import now as timezone_now
from django.utils.translation import gettext as _
from import_export import fields, resources
from import_export.formats import base_formats

from leads.api.serializers import LeadWriteSerializer
from leads.models import Lead, LeadMerge, LeadTag
from leads.services import lead_bulk_upsert

# The columns of a lead file, in the order an export writes them.
COLUMNS: tuple[str, ...] = (
    "external_id",
    "name",
    "company",
    "title",
    "industry",
    "company_size",
    "phone",
    "email",
    "wecom_external_userid",
    "wechat_unionid",
    "source",
    "tags",
)
IDENTITY_COLUMNS = frozenset({"external_id", "phone", "email", "wecom_external_userid", "wechat_unionid"})

# Headers as marketers type them in Chinese spreadsheets.
HEADER_ALIASES: dict[str, str] = {
    "外部id": "external_id",
    "姓名": "name",
    "名字": "name",
    "公司": "company",
    "公司名称": "company",
    "职位": "title",
    "职务": "title",
    "行业": "industry",
    "公司规模": "company_size",
    "规模": "company_size",
    "手机": "phone",
    "手机号": "phone",
    "手机号码": "phone",
    "邮箱": "email",
    "电子邮箱": "email",
    "企业微信id": "wecom_external_userid",
    "unionid": "wechat_unionid",
    "来源": "source",
    "标签": "tags",
}

# The headers of the blank file marketers download (identities without a Chinese name stay English).
TEMPLATE_HEADERS: dict[str, str] = {
    "name": "姓名",
    "company": "公司",
    "title": "职位",
    "industry": "行业",
    "company_size": "公司规模",
    "phone": "手机",
    "email": "邮箱",
    "source": "来源",
    "tags": "标签",
}

FORMATS: dict[str, type[base_formats.Format]] = {"csv": base_formats.CSV, "xlsx": base_formats.XLSX}
BATCH_SIZE = 500
MAX_ROWS = 50_000
_TAG_SEPARATORS = re.compile(r"[,，;；、\n]")
_IMPORT_WHY = "import"


class ImportFileError(ValueError):
    """The file cannot be read as a lead file at all (the message is for the marketer)."""


@dataclass
class ImportRow:
    """One data row of a file: its validated payload or why it is refused, then what became of it."""

    line: int  # the spreadsheet's row number: the header is row 1, the first lead row 2
    payload: dict[str, Any] | None
    tags: list[str] = field(default_factory=list)
    errors: list[tuple[str, str]] = field(default_factory=list)  # (column as in the file, reason)
    status: str = ""  # created | updated | error
    lead_id: int | None = None
    same_as_line: int | None = None  # an earlier row of the file that is the same person
    merged_ids: list[int] = field(default_factory=list)
    values: dict[str, str] = field(default_factory=dict)  # the row's non-blank cells, by field

    @property
    def label(self) -> str:
        """Who the row is, for the report."""
        for name in ("name", "phone", "email", "external_id", "company"):
            if self.values.get(name):
                return self.values[name]
        return ""


@dataclass
class ImportReport:
    rows: list[ImportRow]
    dry_run: bool
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def created(self) -> int:
        return sum(1 for row in self.rows if row.status == "created")

    @property
    def updated(self) -> int:
        return sum(1 for row in self.rows if row.status == "updated")

    @property
    def failed(self) -> int:
        return sum(1 for row in self.rows if row.status == "error")

    @property
    def error_rows(self) -> list[ImportRow]:
        return [row for row in self.rows if row.status == "error"]


# --- Reading files.


def lead_import_dataset(*, content: bytes, file_name: str) -> tablib.Dataset:
    """Read a CSV or XLSX file (by its extension) into a dataset; CSV may be UTF-8 or GBK (Excel)."""
    extension = PurePath(file_name).suffix.lower().lstrip(".")
    format_class = FORMATS.get(extension)
    if format_class is None:
        raise ImportFileError(_("Upload a .csv or .xlsx file."))
    try:
        if format_class is base_formats.CSV:
            try:
                text = content.decode("utf-8-sig")
            except UnicodeDecodeError:
                text = content.decode("gb18030")  # Excel on a Chinese Windows saves CSV in GBK
            dataset = format_class().create_dataset(text)
        else:
            dataset = format_class().create_dataset(content)
    except ImportFileError:
        raise
    except Exception as exc:  # tablib/openpyxl raise many kinds of errors for a broken file
        raise ImportFileError(_("The file cannot be read: %(error)s") % {"error": exc}) from exc
    if not dataset.headers:
        raise ImportFileError(_("The file has no header row."))
    if dataset.height > MAX_ROWS:
        raise ImportFileError(
            _("The file has %(rows)s rows; split it into files of at most %(max)s rows.")
            % {"rows": dataset.height, "max": MAX_ROWS}
        )
    return dataset


def column_for_header(header: Any) -> str | None:
    """The lead column a header names (`手机`, `Phone`, `phone` → "phone"), or None."""
    if header is None:
        return None
    text = str(header).strip().lstrip("\ufeff").lower()
    key = re.sub(r"[\s\-]+", "_", text)
    if key in COLUMNS:
        return key
    return HEADER_ALIASES.get(key) or HEADER_ALIASES.get(text.replace(" ", ""))


def _cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))  # a phone typed into Excel comes back as 13800138000.0
    if isinstance(value, datetime | date | time):
        return value.isoformat()
    return str(value).strip()


def _flatten_errors(errors: Any, column: str) -> Iterable[tuple[str, str]]:
    if isinstance(errors, dict):
        for key, value in errors.items():
            yield from _flatten_errors(value, column if isinstance(key, int) else str(key))
    elif isinstance(errors, list):
        for item in errors:
            yield from _flatten_errors(item, column)
    else:
        yield column, str(errors)


def lead_import_rows(*, dataset: tablib.Dataset) -> tuple[list[ImportRow], list[str]]:
    """Validate every row as the API validates a lead; return the rows and the ignored headers.

    Blank cells are left out of the payload, so an import never erases what is known about a lead."""
    columns: dict[int, str] = {}
    header_of: dict[str, str] = {}
    ignored: list[str] = []
    for position, header in enumerate(dataset.headers or []):
        column = column_for_header(header)
        if column is None or column in header_of:
            if header not in (None, ""):
                ignored.append(str(header))
            continue
        columns[position] = column
        header_of[column] = str(header).strip()
    if not IDENTITY_COLUMNS & header_of.keys():
        raise ImportFileError(
            _("The file has no identity column; give at least one of: %(columns)s.")
            % {"columns": ", ".join(sorted(IDENTITY_COLUMNS))}
        )

    rows: list[ImportRow] = []
    for offset, cells in enumerate(dataset):
        values = {
            column: _cell_text(cells[position])
            for position, column in columns.items()
            if position < len(cells) and _cell_text(cells[position])
        }
        if not values and not any(_cell_text(cell) for cell in cells):
            continue  # blank lines (XLSX files often end with some)
        row = ImportRow(line=offset + 2, payload=None, values=values)
        data: dict[str, Any] = {name: value for name, value in values.items() if name != "tags"}
        if values.get("tags"):
            data["tags"] = [name.strip() for name in _TAG_SEPARATORS.split(values["tags"]) if name.strip()]
        serializer = LeadWriteSerializer(data=data, require_identity=True)
        if serializer.is_valid():
            row.payload, row.tags = LeadWriteSerializer.split(serializer.validated_data)
        else:
            row.status = "error"
            row.errors = [
                (header_of.get(name, "") if name != "non_field_errors" else "", reason)
                for name, reason in _flatten_errors(serializer.errors, "")
            ]
        rows.append(row)
    return rows, ignored


# --- Landing the rows.


def lead_import_run(*, rows: list[ImportRow], dry_run: bool, now: datetime | None = None) -> list[ImportRow]:
    """Upsert the valid rows in batches through `lead_bulk_upsert`; fill in each row's outcome.

    A dry run does all the same work in one transaction and rolls it back: the preview is exactly
    what the import will do, and nothing is written. A real run commits batch by batch (a re-run
    of a half-imported file is harmless: upserts by identity).
    """
    now = now or timezone_now()
    good = [row for row in rows if row.payload is not None]
    with transaction.atomic() if dry_run else nullcontext():
        for start in range(0, len(good), BATCH_SIZE):
            batch = good[start : start + BATCH_SIZE]
            results = lead_bulk_upsert(
                items=[row.payload for row in batch],
                tags=[row.tags for row in batch],
                why=_IMPORT_WHY,
                now=now,
            )
            for result in results:
                row = batch[result.index]
                row.status = result.status
                row.lead_id = result.id
                row.merged_ids = list(result.merged_ids)
                if result.status == "error":
                    row.errors = [
                        ("", reason) for _column, reason in _flatten_errors(result.errors or {}, "")
                    ]
        _rows_resolve_merges(good)
        if dry_run:
            transaction.set_rollback(True)
    return rows


def _rows_resolve_merges(rows: list[ImportRow]) -> None:
    """Point rows at the lead they ended up in (a later row may merge an earlier row's lead away),
    and mark rows that are the same person as an earlier row."""
    merged_into = dict(
        LeadMerge.objects.filter(merged_id__in=[row.lead_id for row in rows if row.lead_id]).values_list(
            "merged_id", "survivor_id"
        )
    )
    first_line: dict[int, int] = {}
    for row in rows:
        if row.lead_id is None:
            continue
        row.lead_id = merged_into.get(row.lead_id, row.lead_id)
        if row.lead_id in first_line:
            row.same_as_line = first_line[row.lead_id]
        else:
            first_line[row.lead_id] = row.line


def lead_import(
    *, content: bytes, file_name: str, dry_run: bool, now: datetime | None = None
) -> ImportReport:
    """Read, validate and upsert a lead file; the report says row by row what happened and why."""
    dataset = lead_import_dataset(content=content, file_name=file_name)
    rows, ignored = lead_import_rows(dataset=dataset)
    lead_import_run(rows=rows, dry_run=dry_run, now=now)
    return ImportReport(rows=rows, dry_run=dry_run, ignored_columns=ignored)


# --- Export in the import's columns (django-import-export's admin export uses this resource).


class LeadResource(resources.ModelResource):
    """A lead file's columns: what the export writes is what the import reads back."""

    tags = fields.Field(column_name="tags", readonly=True)

    class Meta:
        model = Lead
        fields = COLUMNS
        export_order = COLUMNS

    def dehydrate_tags(self, lead: Lead) -> str:
        return ", ".join(sorted(lead_tag.tag.name for lead_tag in lead.lead_tags.all()))

    def filter_export(self, queryset: QuerySet[Lead], **kwargs: Any) -> QuerySet[Lead]:
        # Replace any prefetch of the caller (the admin's list prefetches the same relation differently).
        return queryset.prefetch_related(None).prefetch_related(
            Prefetch("lead_tags", queryset=LeadTag.objects.select_related("tag"))
        )


def lead_import_template(*, file_format: str) -> bytes:
    """An empty lead file with the Chinese headers marketers fill in."""
    dataset = tablib.Dataset(headers=[TEMPLATE_HEADERS.get(column, column) for column in COLUMNS])
    data = FORMATS[file_format]().export_data(dataset)
    # A BOM, so that Excel opens the CSV as UTF-8 (the import reads it either way).
    return ("\ufeff" + data).encode() if isinstance(data, str) else data
