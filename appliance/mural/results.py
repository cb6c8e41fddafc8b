"""The monthly results report ("Informe de resultados"): per area, the activities covered,
the photos, videos, audio and approved items, as figures (JSON), and as an A4 PDF with a
table and bar charts drawn by Pillow. The web UI shows the same figures with SVG charts.

The figures come from the query index: the month's archive folders (an activity belongs to
the month it starts in) with their agenda area, counted per folder by kind and approval.
Photos count RAWs too. An activity is *covered* when its folder holds at least one item;
*planned* counts the agenda's activities that start in the month. Items of no activity
count in the row of no area ("" in JSON, "Sin área" on paper).
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from PIL import Image, ImageDraw

from appliance.agenda import SIN_ACTIVIDAD, Agenda
from appliance.config import Config
from appliance.fsutil import fsync_dir, open_temp
from appliance.mural.content import month_label
from appliance.mural.fonts import Fonts
from appliance.mural.layout import MM_PER_INCH, PALETTE
from appliance.mural.text import clean, wrap
from appliance.query import ItemIndex, ItemQuery

COUNTS = ("items", "photos", "videos", "audio", "approved")
KIND_COUNTS = {"photo": "photos", "raw": "photos", "video": "videos", "audio": "audio"}
# What the charts show, in this order, with their colours.
SERIES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("photos", (122, 28, 58)), ("videos", (214, 126, 44)), ("audio", (62, 120, 178)),
    ("approved", (70, 150, 90)),
)
ACTIVITY_SERIES: tuple[tuple[str, tuple[int, int, int]], ...] = (
    ("activities", (122, 28, 58)), ("planned", (190, 190, 190)),
)
A4_MM = (210, 297)
NO_AREA = "Sin área"
# Spanish labels of the PDF (it is printed for the town hall, like the mural).
LABELS = {
    "title": "Informe de resultados", "area": "Área", "activities": "Actividades cubiertas",
    "planned": "Programadas", "items": "Elementos", "photos": "Fotos", "videos": "Videos",
    "audio": "Audio", "approved": "Aprobados", "total": "Total",
    "chart_media": "Fotos, videos, audio y aprobados por área",
    "chart_activities": "Actividades cubiertas y programadas por área",
    "summary": "{activities} de {planned} actividades programadas cubiertas · Fotos: {photos} · "
               "Videos: {videos} · Audio: {audio} · Aprobados: {approved}",
    "empty": "Sin elementos ni actividades en este mes.",
    "sheet": "Hoja {page} de {pages}",
}


def _zero() -> dict[str, Any]:
    return {"activities": 0, "planned": 0, **dict.fromkeys(COUNTS, 0)}


def figures(index: ItemIndex, agenda: Agenda, zone: ZoneInfo, month: str) -> dict[str, Any]:
    """The month's figures: {"month", "month_label", "areas": [{"area", "activities",
    "planned", "items", "photos", "videos", "audio", "approved", "detail": [...]}],
    "totals": {...}}; areas by name, the row of no area ("") last."""
    rows: dict[str, dict[str, Any]] = {}
    planned: dict[str, set[str]] = {}
    for activity in agenda.activities():
        if activity.start.astimezone(zone).strftime("%Y-%m") == month:
            planned.setdefault(clean(activity.area), set()).add(activity.slug)
    for folder in index.folders(month):
        area = clean(folder["area"])
        row = rows.setdefault(area, {**_zero(), "detail": []})
        counts = dict.fromkeys(COUNTS, 0)
        counts["items"] = folder["count"]
        for kind, name in KIND_COUNTS.items():
            counts[name] += index.search(ItemQuery(folder=folder["folder"], kind=kind,
                                                   limit=1))[1]
        counts["approved"] = index.search(ItemQuery(folder=folder["folder"], approved=True,
                                                    limit=1))[1]
        for name in COUNTS:
            row[name] += counts[name]
        slug = folder["activity"]
        if slug != SIN_ACTIVIDAD and counts["items"] > 0:
            row["activities"] += 1
            planned.setdefault(area, set())
        row["detail"].append({"folder": folder["folder"], "activity": slug,
                              "title": clean(folder["title"]), **counts})
    for area, slugs in planned.items():
        rows.setdefault(area, {**_zero(), "detail": []})["planned"] = len(slugs)
    ordered = sorted(rows.items(), key=lambda kv: (kv[0] == "", kv[0].casefold(), kv[0]))
    totals = _zero()
    areas = []
    for area, row in ordered:
        row["detail"].sort(key=lambda d: d["folder"])
        for name in ("activities", "planned", *COUNTS):
            totals[name] += row[name]
        areas.append({"area": area, **row})
    return {"month": month, "month_label": month_label(month), "areas": areas,
            "totals": totals}


# --- the PDF ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Row:
    """A strip of the report that stays on one sheet: its height and how to draw it."""

    height: int
    draw: Callable[[ImageDraw.ImageDraw, int, int], None]
    repeat: _Row | None = None  # drawn again at the top of a new sheet (a table's header)


class _Report:
    def __init__(self, config: Config, dpi: int) -> None:
        self.dpi = dpi
        self.width = round(A4_MM[0] * dpi / MM_PER_INCH)
        self.height = round(A4_MM[1] * dpi / MM_PER_INCH)
        self.margin = self.mm(15)
        self.inner = self.width - 2 * self.margin
        self.fonts = Fonts()
        self.config = config

    def mm(self, value: float) -> int:
        return max(1, round(value * self.dpi / MM_PER_INCH))

    def pt(self, value: float) -> int:
        return max(6, round(value * self.dpi / 72))

    def text_row(self, text: str, style: str, points: float, color: str, *,
                 max_lines: int = 3, gap_after: float = 2) -> _Row:
        size = self.pt(points)
        inset = self.fonts.inset(size)
        lines = wrap(self.fonts, style, size, text, self.inner - 2 * inset, max_lines).lines
        line_height = self.fonts.line_height(style, size)
        top = self.fonts.top(style, size)
        face = self.fonts.face(style, size)

        def draw(d: ImageDraw.ImageDraw, x: int, y: int) -> None:
            for i, line in enumerate(lines):
                d.text((x + inset, y + top + i * line_height), line, font=face,
                       fill=PALETTE[color], anchor="la")

        return _Row(line_height * len(lines) + self.mm(gap_after), draw)

    def rule(self, thickness: float = 0.8, gap_after: float = 5) -> _Row:
        height = self.mm(thickness)

        def draw(d: ImageDraw.ImageDraw, x: int, y: int) -> None:
            d.rectangle((x, y, x + self.inner - 1, y + height - 1), fill=PALETTE["accent"])

        return _Row(height + self.mm(gap_after), draw)

    def cell_lines(self, text: str, style: str, size: int, width: int,
                   max_lines: int = 2) -> tuple[str, ...]:
        inset = self.fonts.inset(size)
        return wrap(self.fonts, style, size, text, max(1, width - 2 * inset), max_lines).lines

    # -- the table -------------------------------------------------------------------------

    def table(self, figures: dict[str, Any]) -> list[_Row]:
        size = self.pt(9)
        line_height = self.fonts.line_height("regular", size)
        pad = self.mm(1.2)
        numbers = ("activities", "planned", "photos", "videos", "audio", "approved")
        inset = self.fonts.inset(size)
        # each number column as wide as its header's longest word (headers wrap at spaces)
        widths = [max(self.mm(16), 2 * inset + self.mm(2) + math.ceil(max(
            self.fonts.length("bold", size, word) for word in LABELS[n].split())))
            for n in numbers]
        widths.insert(0, self.inner - sum(widths))

        def row(values: list[str], style: str, shade: bool) -> _Row:
            cells = [self.cell_lines(v, style, size, w) for v, w in zip(values, widths,
                                                                          strict=True)]
            height = max(len(c) for c in cells) * line_height + 2 * pad
            face = self.fonts.face(style, size)
            top = self.fonts.top(style, size)
            inset = self.fonts.inset(size)

            def draw(d: ImageDraw.ImageDraw, x: int, y: int) -> None:
                if shade:
                    d.rectangle((x, y, x + self.inner - 1, y + height - 1),
                                fill=(244, 238, 240))
                d.line((x, y + height - 1, x + self.inner - 1, y + height - 1),
                       fill=(200, 200, 200), width=1)
                cx = x
                for i, (lines, w) in enumerate(zip(cells, widths, strict=True)):
                    for j, line in enumerate(lines):
                        if i == 0:
                            tx = cx + inset
                        else:  # numbers right-aligned
                            tx = cx + w - inset - math.ceil(
                                self.fonts.length(style, size, line))
                        d.text((tx, y + pad + top + j * line_height), line, font=face,
                               fill=PALETTE["ink"], anchor="la")
                    cx += w

            return _Row(height, draw)

        header = row([LABELS["area"], *(LABELS[n] for n in numbers)], "bold", True)
        rows = [header]
        for area in figures["areas"]:
            rows.append(row([area["area"] or NO_AREA, *(_number(area[n]) for n in numbers)],
                            "regular", False))
        totals = figures["totals"]
        rows.append(row([LABELS["total"], *(_number(totals[n]) for n in numbers)], "bold",
                        True))
        return [rows[0], *(_Row(r.height, r.draw, repeat=header) for r in rows[1:])]

    # -- the charts ------------------------------------------------------------------------

    def chart(self, title: str, figures: dict[str, Any],
              series: tuple[tuple[str, tuple[int, int, int]], ...]) -> list[_Row]:
        size = self.pt(8.5)
        line_height = self.fonts.line_height("regular", size)
        face = self.fonts.face("regular", size)
        top = self.fonts.top("regular", size)
        inset = self.fonts.inset(size)
        label_width = self.mm(45)
        bar = self.mm(3.2)
        gap = self.mm(0.8)
        value_room = self.mm(14)
        plot = self.inner - label_width - value_room
        most = max([1, *(area[name] for area in figures["areas"] for name, _ in series)])
        rows = [self.text_row(title, "bold", 11, "ink", gap_after=1.5)]

        legend_height = line_height + self.mm(2)

        def legend(d: ImageDraw.ImageDraw, x: int, y: int) -> None:
            cx = x
            for name, colour in series:
                d.rectangle((cx, y + top, cx + line_height - 1, y + top + line_height // 2),
                            fill=colour)
                cx += line_height + self.mm(1.5)
                d.text((cx, y + top), LABELS[name], font=face, fill=PALETTE["ink"],
                       anchor="la")
                cx += math.ceil(self.fonts.length("regular", size, LABELS[name])) \
                    + self.mm(5)

        legend_row = _Row(legend_height, legend)
        rows.append(legend_row)
        for area in figures["areas"]:
            label = self.cell_lines(area["area"] or NO_AREA, "regular", size, label_width, 2)
            bars_height = len(series) * (bar + gap)
            height = max(len(label) * line_height, bars_height) + self.mm(2.5)

            def draw(d: ImageDraw.ImageDraw, x: int, y: int, area: dict[str, Any] = area,
                     label: tuple[str, ...] = label) -> None:
                for j, line in enumerate(label):
                    d.text((x + inset, y + top + j * line_height), line, font=face,
                           fill=PALETTE["ink"], anchor="la")
                by = y
                for name, colour in series:
                    value = area[name]
                    length = round(plot * value / most)
                    bx = x + label_width
                    if length:
                        d.rectangle((bx, by, bx + length - 1, by + bar - 1), fill=colour)
                    text = _number(value)
                    small = self.fonts.face("regular", max(6, size * 3 // 4))
                    d.text((bx + length + self.mm(1), by + bar // 2), text, font=small,
                           fill=PALETTE["muted"], anchor="lm")
                    by += bar + gap

            rows.append(_Row(height, draw, repeat=legend_row))
        return rows


def _number(value: int) -> str:
    return f"{value:,}".replace(",", "\u202f")  # 1 234: a thin space, as in Mexico's SI usage


def write_pdf(config: Config, result: dict[str, Any], pdf: Path) -> int:
    """The report of `figures(...)` as an A4 PDF at `mural.dpi`; the number of sheets."""
    report = _Report(config, config.mural.dpi)
    rows: list[_Row] = [
        report.text_row(clean(config.mural.institution), "bold", 11, "accent", gap_after=1),
        report.text_row(LABELS["title"], "bold", 24, "ink", gap_after=1),
        report.text_row(result["month_label"], "regular", 16, "accent", gap_after=2),
        report.rule(),
    ]
    if not result["areas"]:
        rows.append(report.text_row(LABELS["empty"], "regular", 11, "ink"))
    else:
        totals = result["totals"]
        rows.append(report.text_row(LABELS["summary"].format(
            **{k: _number(v) for k, v in totals.items()}), "regular", 10.5, "ink",
            gap_after=5))
        rows.extend(report.table(result))
        rows.append(_Row(report.mm(8), lambda d, x, y: None))
        rows.extend(report.chart(LABELS["chart_media"], result, SERIES))
        rows.append(_Row(report.mm(6), lambda d, x, y: None))
        rows.extend(report.chart(LABELS["chart_activities"], result, ACTIVITY_SERIES))
    footer_size = report.pt(8)
    footer_height = report.fonts.line_height("regular", footer_size)
    bottom = report.height - report.margin - footer_height - report.mm(4)
    # Place the rows on sheets: a row that does not fit goes to the next sheet, after the
    # row it repeats (a table's header, a chart's legend).
    sheets: list[list[tuple[_Row, int]]] = [[]]
    y = report.margin
    for row in rows:
        if y + row.height > bottom and sheets[-1]:
            sheets.append([])
            y = report.margin
            if row.repeat is not None:
                sheets[-1].append((row.repeat, y))
                y += row.repeat.height
        sheets[-1].append((row, y))
        y += row.height
    pdf.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = open_temp(pdf.parent, flags=os.O_RDWR)
    try:
        with os.fdopen(fd, "w+b") as fp:
            for number, placed in enumerate(sheets):
                image = Image.new("RGB", (report.width, report.height), PALETTE["paper"])
                draw = ImageDraw.Draw(image)
                for row, top in placed:
                    row.draw(draw, report.margin, top)
                sheet = LABELS["sheet"].format(page=number + 1, pages=len(sheets))
                footer = wrap(report.fonts, "regular", footer_size,
                              f"{clean(config.mural.institution)} · {sheet}",
                              report.inner - 2 * report.fonts.inset(footer_size), 1).lines
                draw.text((report.margin + report.fonts.inset(footer_size),
                           report.height - report.margin - footer_height
                           + report.fonts.top("regular", footer_size)), footer[0],
                          font=report.fonts.face("regular", footer_size),
                          fill=PALETTE["muted"], anchor="la")
                image.save(fp, "PDF", resolution=report.dpi, append=number > 0, quality=92,
                           subsampling=0, title=f"{LABELS['title']} — {result['month_label']}",
                           creator="Acopio")
                image.close()
            fp.flush()
            os.fsync(fp.fileno())
        os.replace(tmp, pdf)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    fsync_dir(pdf.parent)
    return len(sheets)
