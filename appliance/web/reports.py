"""Reports: the monthly results page (with its PDF) and the printed mural (PDF and preview).

Both are made by appliance.mural (no Flask there); this blueprint checks the request, calls
it and sends the answer. The mural is rendered on the request that first asks for it and
kept under state/reports/ (named by a hash of its content and settings), so asking again,
or downloading it after looking at its preview, sends the same files at once; a rendering
is done by one request at a time (a lock file), others wait for it and then reuse it.

The charts of the results page are SVG drawn here, server-side, with presentation
attributes only (the Content-Security-Policy allows no inline style or script), and their
labels go through the template's escaping like every other text.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, abort, g, render_template, request, send_file

from appliance.fsutil import file_lock
from appliance.mural import fonts as fonts_mod
from appliance.mural.content import NoApprovedPhotos
from appliance.mural.fonts import FontError
from appliance.mural.layout import PAPERS
from appliance.mural.render import cached_mural, prune, reports_dir
from appliance.mural.results import ACTIVITY_SERIES, SERIES, figures, write_pdf
from appliance.web.context import web
from appliance.web.security import requires

bp = Blueprint("reports", __name__)

MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")
DEFAULT_PAPER = "A2"
FORMATS = ("html", "pdf", "png")
RESULTS_RECIPE = 1
# SVG chart geometry, in the SVG's own units (it scales to the page's width).
CHART_WIDTH = 720
LABEL_WIDTH = 180
VALUE_ROOM = 56
BAR = 14
BAR_GAP = 3
GROUP_GAP = 14
LEGEND = 28
LABEL_CHARS = 26


def _month(default: str | None = None) -> str | None:
    month = request.args.get("month", "").strip()
    if not month:
        return default
    if not MONTH.match(month):
        abort(400)
    return month


def _format() -> str:
    fmt = request.args.get("format", "html")
    if fmt not in FORMATS:
        abort(400)
    return fmt


def _newest_month() -> str:
    months = web().index.months()
    if months:
        return months[0]["month"]
    return datetime.now(web().config.zone).strftime("%Y-%m")


def _rgb(colour: tuple[int, int, int]) -> str:
    return "#{:02x}{:02x}{:02x}".format(*colour)


def chart(result: dict[str, Any], series: tuple[tuple[str, tuple[int, int, int]], ...],
          labels: dict[str, str], no_area: str) -> dict[str, Any]:
    """A horizontal grouped bar chart: one group per area, one bar per series, as shapes
    the template writes out as SVG (every text escaped there)."""
    areas = result["areas"]
    most = max([1, *(area[name] for area in areas for name, _ in series)])
    plot = CHART_WIDTH - LABEL_WIDTH - VALUE_ROOM
    group = len(series) * (BAR + BAR_GAP) - BAR_GAP
    bars, texts = [], []
    legend, x = [], 0
    for name, colour in series:
        legend.append({"x": x, "fill": _rgb(colour), "label": labels[name]})
        x += 28 + 9 * len(labels[name])
    y = LEGEND
    for area in areas:
        name_text = area["area"] or no_area
        short = name_text if len(name_text) <= LABEL_CHARS else \
            name_text[:LABEL_CHARS - 1].rstrip() + "…"
        texts.append({"x": LABEL_WIDTH - 8, "y": y + group / 2, "text": short,
                      "full": name_text})
        by = y
        for key, colour in series:
            value = area[key]
            length = round(plot * value / most)
            bars.append({"x": LABEL_WIDTH, "y": by, "width": length, "height": BAR,
                         "fill": _rgb(colour), "value": value, "value_x": LABEL_WIDTH + length + 6,
                         "value_y": by + BAR / 2, "title": f"{name_text}: {labels[key]} {value}"})
            by += BAR + BAR_GAP
        y += group + GROUP_GAP
    return {"width": CHART_WIDTH, "height": max(y, LEGEND + 1), "bars": bars, "texts": texts,
            "legend": legend}


@bp.get("/informes/resultados")
@requires("view")
def results() -> Any:
    month = _month() or _newest_month()
    fmt = _format()
    if fmt == "png":
        abort(400)
    ctx = web()
    result = figures(ctx.index, ctx.agenda, ctx.config.zone, month)
    if fmt == "pdf":
        return _results_pdf(result)
    t = g.t
    labels = {name: t(f"reports.{name}") for name in
              ("photos", "videos", "audio", "approved", "activities", "planned")}
    no_area = t("reports.no_area")
    return render_template(
        "report_results.html", month=month, result=result,
        months=[m["month"] for m in ctx.index.months()],
        media_chart=chart(result, SERIES, labels, no_area),
        activity_chart=chart(result, ACTIVITY_SERIES, labels, no_area))


def _results_pdf(result: dict[str, Any]) -> Response:
    config = web().config
    recipe = {"v": RESULTS_RECIPE, "dpi": config.mural.dpi,
              "institution": config.mural.institution, "fonts": fonts_mod.identity(),
              "figures": result}
    key = hashlib.sha256(json.dumps(recipe, sort_keys=True, ensure_ascii=False).encode()
                         ).hexdigest()[:20]
    folder = reports_dir(web().data)
    stem = f"informe-{result['month']}-"
    pdf = folder / f"{stem}{key}.pdf"
    with file_lock(folder / ".informe.lock"):
        if not pdf.is_file():
            write_pdf(config, result, pdf)
            prune(folder, stem, made=key)
    return _send(pdf, "application/pdf", f"informe-{result['month']}.pdf", attachment=True)


def _send(path: Path, mimetype: str, name: str, *, attachment: bool) -> Response:
    response = send_file(path, mimetype=mimetype, as_attachment=attachment,
                         download_name=name, conditional=True, etag=True, max_age=None)
    response.headers["Cache-Control"] = "private, no-cache"
    return response


@bp.get("/informes/mural")
@requires("print_mural")
def mural() -> Any:
    ctx = web()
    months = [m["month"] for m in ctx.index.months()]
    month = _month()
    paper = request.args.get("size", DEFAULT_PAPER)
    if paper not in PAPERS:
        abort(400)
    fmt = _format()
    if month is None:
        if fmt != "html":
            abort(400)
        return render_template("report_mural.html", months=months,
                               month=months[0] if months else "", paper=paper, papers=PAPERS,
                               made=None, error=None)
    try:
        made = cached_mural(ctx.config, ctx.data, ctx.index, ctx.agenda, month, paper)
    except NoApprovedPhotos:
        if fmt != "html":
            abort(409)
        return render_template("report_mural.html", months=months, month=month, paper=paper,
                               papers=PAPERS, made=None,
                               error=g.t("reports.mural.no_photos",
                                         month=g.t.month(month))), 409
    except FontError as exc:
        abort(500, str(exc))
    if fmt == "pdf":
        return _send(made.pdf, "application/pdf", f"mural-{month}-{paper}.pdf",
                     attachment=True)
    if fmt == "png":
        return _send(made.png, "image/png", f"mural-{month}-{paper}.png",
                     attachment=request.args.get("download") == "1")
    summary = made.summary
    captions = {p["sha256"]: p for area in summary["content"]["areas"]
                for activity in area["activities"] for p in activity["photos"]}
    shortened = [{"kind": e["kind"], "text": e["text"], "sha256": e["sha256"],
                  "dropped": e["dropped"],
                  "name": captions.get(e["sha256"] or "", {}).get("original_name", "")}
                 for e in summary["ellipsized"]]
    return render_template("report_mural.html", months=months, month=month, paper=paper,
                           papers=PAPERS, made=summary, shortened=shortened, error=None)
