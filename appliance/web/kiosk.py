"""The kiosk screen (`/mural`) and its settings page (Dirección).

The screen is public, like the physical mural beside it: `/mural` (the page), `/api/mural`
(its slides) and `/mural/media/<sha256>/<name>` (their pictures and videos) answer without a
login, and show approved items only. Nothing else is public: the page links nowhere, and a
derivative of an item that is not approved right now is a 404 here, whatever its hash.
`/mural/logo.png` is the institution's logo Dirección uploaded. The settings page
(`/mural/ajustes`) needs `manage_kiosk`.

`/api/mural` is what the screen's script (static/mural.js) polls every few seconds: the
settings it needs (interval, layout, colours, logo, ticker) and the slides, each with its
heading (activity, area, date) and its items' captions and URLs, every text already
formatted. An answer is built at most once a second whatever the number of screens (and of
curious visitors) polling it; its ETag makes an unchanged one a 304.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    send_file,
    url_for,
)

from appliance import kiosk
from appliance.fields import shown_size
from appliance.kiosk import KioskError, KioskSettings, KioskStore
from appliance.query import ItemQuery
from appliance.web.context import EXTENSION, web
from appliance.web.present import check_sha256
from appliance.web.security import requires
from ingest.derive import plan

log = logging.getLogger(__name__)
bp = Blueprint("kiosk", __name__)
STATE = "acopio_kiosk"

# Public derivative names -> the derivative each may be (no audio, no waveform).
MEDIA = {"thumb": "thumb", "preview": "preview", "poster": "poster", "proxy": "video_proxy"}
# Derivatives are addressed by content, but an approval can be withdrawn: the screen's
# browser may keep one for a few minutes (it keeps rotating through a server restart),
# never for a year like the staff's.
MEDIA_CACHE = "private, max-age=300"
ANSWER_TTL_S = 1.0  # /api/mural is built at most this often
MAX_ITEMS = 1000  # items one screen rotates through, at most
_PAGE = 500  # ItemQuery's largest page


@dataclass
class KioskState:
    store: KioskStore
    lock: threading.Lock = field(default_factory=threading.Lock)
    answer: tuple[Any, float, dict[str, Any]] | None = None  # (key, built at, body)


@bp.record_once
def _setup(state: Any) -> None:
    context = state.app.extensions[EXTENSION]
    state.app.extensions[STATE] = KioskState(KioskStore(context.data))


def _state() -> KioskState:
    return current_app.extensions[STATE]


def _logo_url(settings: KioskSettings) -> str | None:
    return url_for("kiosk.logo", v=settings.logo) if settings.logo else None


def _period_label(period: kiosk.Period) -> str:
    t = g.t
    if period.month:
        return t.month(period.month)
    return t("kiosk.range", start=t.date(period.date_from.isoformat(), "long"),
             end=t.date(period.date_to.isoformat(), "long"))


def _today() -> Any:
    return datetime.now(web().config.zone).date()


# -- the screen -----------------------------------------------------------------------------


@bp.get("/mural")
def mural() -> Response:
    settings = _state().store.load()
    period = kiosk.period_of(settings, _today())
    response = make_response(render_template(
        "mural.html", settings=settings, period_label=_period_label(period)))
    response.headers["Cache-Control"] = "no-cache"
    return response


@bp.get("/api/mural")
def api_mural() -> Response:
    return jsonify(answer())


def answer() -> dict[str, Any]:
    """The slides for the settings as they are now, built at most once per ANSWER_TTL_S."""
    state = _state()
    settings = state.store.load()
    period = kiosk.period_of(settings, _today())
    key = (state.store.identity(), settings, period, g.t.language)
    with state.lock:  # one build at a time; the others take its answer
        cached = state.answer
        if cached is not None and cached[0] == key \
                and time.monotonic() - cached[1] < ANSWER_TTL_S:
            return cached[2]
        body = _build(settings, period)
        state.answer = (key, time.monotonic(), body)
        return body


def _records(period: kiosk.Period) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for kind in kiosk.SHOWN_KINDS:
        offset = 0
        while len(found) < MAX_ITEMS:
            query = ItemQuery(approved=True, kind=kind, month=period.month,
                              date_from=period.date_from, date_to=period.date_to,
                              order="captured", limit=_PAGE, offset=offset)
            page, total = web().index.search(query)
            found += page
            offset += len(page)
            if not page or offset >= total:
                break
    return found[:MAX_ITEMS]


def _build(settings: KioskSettings, period: kiosk.Period) -> dict[str, Any]:
    t = g.t
    data = web().data
    activities = {a.slug: a for a in web().agenda.activities()}
    groups: dict[str, kiosk.Group] = {}
    when_taken: dict[str, tuple[float, str]] = {}  # orders a group's photos, RAWs and videos
    for record in _records(period):
        if not kiosk.showable(record):
            continue
        activity = activities.get(record.get("activity") or "")
        area = activity.area if activity is not None else ""
        if settings.areas and area not in settings.areas:
            continue
        derivatives = plan.existing(data, record)
        sha = record["sha256"]
        if record["kind"] == "video":
            if "proxy" not in derivatives:
                continue  # not transcoded yet: shown once it is
            image = url_for("kiosk.media", sha256=sha, name="poster") \
                if "poster" in derivatives else None
            video = url_for("kiosk.media", sha256=sha, name="proxy")
        else:
            if "preview" not in derivatives:
                continue
            image, video = url_for("kiosk.media", sha256=sha, name="preview"), None
        captured = _moment(record.get("captured_at"))
        folder = record.get("folder") or ""
        group = groups.get(folder)
        if group is None:
            if activity is not None:
                title, when = activity.title, kiosk.format_group_date(
                    activity.start, activity.end, lambda m: t.date(m, "long"))
                order = (activity.start.timestamp(), folder)
            else:
                title, when = "", t.date(captured, "long") if captured else ""
                order = (captured.timestamp() if captured else 0.0, folder)
            group = groups[folder] = kiosk.Group(key=folder, title=title, area=area,
                                                 date=when, order=order)
        when_taken[sha] = (captured.timestamp() if captured else 0.0, sha)
        shown = shown_size(record)
        group.items.append({
            "sha256": sha, "kind": "video" if video else "photo",
            "caption": record.get("caption") or "", "credit": record.get("credit") or "",
            "date": t.date(captured, "long") if captured else "",
            # as seen: a portrait phone photo or video is stored turned
            "width": shown[0] if shown else None, "height": shown[1] if shown else None,
            "duration": record.get("duration"), "image": image, "video": video,
        })
    for group in groups.values():
        group.items.sort(key=lambda item: when_taken[item["sha256"]])
    slides = kiosk.plan_slides(groups.values(), settings,
                               duration=lambda item: item.get("duration"))
    return {
        "settings": {
            "interval_s": settings.interval_s, "layout": settings.layout,
            "colours": {name: getattr(settings, name) for name in kiosk.COLOURS},
            "logo": _logo_url(settings), "ticker": list(settings.ticker),
        },
        "period": _period_label(period),
        "count": sum(len(s["items"]) for s in slides),
        "slides": slides,
    }


def _moment(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(value) if isinstance(value, str) and value else None
    except ValueError:
        return None


@bp.get("/mural/media/<sha256>/<name>")
def media(sha256: str, name: str) -> Response:
    """A picture or video of an item approved right now; anything else is a 404 (the same
    answer for an unknown hash, an unapproved item and a derivative the kiosk never uses)."""
    check_sha256(sha256)
    if name not in MEDIA:
        abort(404)
    record = web().index.get(sha256)
    if record is None or not kiosk.showable(record):
        abort(404)
    path = plan.path(web().data, sha256, MEDIA[name])
    if not path.is_file():
        abort(404)
    response = send_file(path, conditional=True, etag=True, max_age=None)
    response.headers["Cache-Control"] = MEDIA_CACHE
    return response


@bp.get("/mural/logo.png")
def logo() -> Response:
    store = _state().store
    if not store.load().logo or not store.logo_path.is_file():
        abort(404)
    response = send_file(store.logo_path, mimetype="image/png", conditional=True, etag=True,
                         max_age=None)
    response.headers["Cache-Control"] = MEDIA_CACHE  # the URL carries the logo's version
    return response


# -- the settings page (Dirección) ----------------------------------------------------------


def _page(settings: KioskSettings, *, status: int = 200, error: str | None = None,
          draft: dict[str, Any] | None = None, saved: bool = False) -> Response:
    areas = sorted(set(web().index.areas()) | set(settings.areas))
    values = asdict(settings)
    values.update(draft or {})
    if not isinstance(values["ticker"], str):
        values["ticker"] = "\n".join(values["ticker"])
    response = make_response(render_template(
        "kiosk_settings.html", settings=settings, values=values, areas=areas,
        layouts=kiosk.LAYOUTS, periods=kiosk.PERIODS, logo_url=_logo_url(settings),
        interval_range=kiosk.INTERVAL_RANGE, ticker_max=kiosk.TICKER_MAX_MESSAGES,
        ticker_chars=kiosk.TICKER_MAX_CHARS, error=error, saved=saved), status)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/mural/ajustes")
@requires("manage_kiosk")
def settings() -> Response:
    return _page(_state().store.load(), saved=request.args.get("guardado") == "1")


def form_changes(form: Any) -> dict[str, Any]:
    """The settings a posted form sets; fields it does not carry stay as they are."""
    changes: dict[str, Any] = {}
    for name in ("period", "month", "date_from", "date_to", "layout", *kiosk.COLOURS):
        if name in form:
            changes[name] = form.get(name, "").strip()
    if "interval_s" in form:
        try:
            changes["interval_s"] = int(form.get("interval_s", "").strip())
        except ValueError:
            raise KioskError("interval_s", "interval", "expected whole seconds") from None
    if form.get("areas_sent") == "1":  # checkboxes: none ticked sends nothing at all
        changes["areas"] = form.getlist("areas")
    if "ticker" in form:
        changes["ticker"] = form.get("ticker", "").splitlines()
    return changes


@bp.post("/mural/ajustes")
@requires("manage_kiosk")
def save_settings() -> Response:
    store = _state().store
    form = request.form
    upload = request.files.get("logo")
    logo_bytes = upload.read(kiosk.LOGO_MAX_BYTES + 1) if upload and upload.filename else None
    try:
        changes = form_changes(form)
        kiosk.validate(changes, store.load())  # every check before anything is written
        if logo_bytes is not None:
            kiosk.normalise_logo(logo_bytes)
        store.save(changes)
        if logo_bytes is not None:
            store.set_logo(logo_bytes)
        elif form.get("logo_remove") == "1":
            store.remove_logo()
    except KioskError as exc:
        # the page keeps what was typed
        draft: dict[str, Any] = {k: v for k, v in form.items()
                                 if k in KioskSettings.__dataclass_fields__ and k != "logo"}
        if form.get("areas_sent") == "1":
            draft["areas"] = form.getlist("areas")
        label = g.t(f"kiosk.field.{exc.field}")
        return _page(store.load(), status=400, draft=draft,
                     error=g.t("kiosk.invalid", field=label,
                               detail=g.t(f"kiosk.error.{exc.code}")))
    log.info("%s changed the kiosk settings", g.user.name)
    return redirect(url_for("kiosk.settings", guardado=1), code=303)
