"""The editorial pages: the agenda (list, add, change, remove, the kit's current activity),
an activity's page with its items, and the form posts behind the item page and the grids'
selection (describe and pick, approve, re-file, a ZIP of a selection).

Each form post is the no-script way to the same core call the JSON API makes (editing.py,
agenda.py): the page's script usually sends JSON instead, but the ZIP is always a plain form
post so that the browser streams it to disk. Every route states its permission with
`@requires`: a hidden button is not a refusal. After a write the query index follows it at
once (an edit's or a re-filing's records go straight in, see editing.make_editor; an agenda
change is read by a forced refresh), so the page the browser is sent back to shows it.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.datastructures import MultiDict

from appliance.agenda import SIN_ACTIVIDAD, Activity, AgendaError, check_slug
from appliance.editorial import EditConflict, EditError, NotFound
from appliance.query import ItemQuery
from appliance.web import agenda as agenda_api
from appliance.web import browse, present
from appliance.web.context import web
from appliance.web.editing import make_editor, stream_zip
from appliance.web.i18n import error_text
from appliance.web.security import requires, safe_next

log = logging.getLogger(__name__)
bp = Blueprint("desk", __name__)

AGENDA_FIELDS = ("title", "area", "place", "start", "end")
TEXT_FIELDS = ("caption", "credit", "place")
LIST_FIELDS = ("tags", "people")
# ?ok=CODE after a form post (post, redirect, get): the page says what was done.
AGENDA_OK = ("added", "saved", "removed", "current")
ITEM_OK = ("saved", "approved", "withdrawn", "refiled")


def _fresh() -> None:
    """Read the change just written into the query index, so the next page shows it (the
    index otherwise catches up within about a second)."""
    web().index.refresh(force=True)


def _ok(codes: tuple[str, ...]) -> str | None:
    code = request.args.get("ok")
    return code if code in codes else None


# -- the agenda --------------------------------------------------------------------------


def _agenda_page(status: int = 200, error: str | None = None,
                 form: MultiDict[str, str] | None = None) -> Response:
    return make_response(render_template(
        "agenda.html", activities=web().agenda.activities(), current=web().agenda.current(),
        areas=web().index.areas(), error=error, form=form, ok=_ok(AGENDA_OK)), status)


def _agenda_error(exc: AgendaError) -> str:
    """"Revise los datos: la actividad termina antes de empezar.", in the screen's language
    (the JSON API and the CLI keep the English `str(exc)`)."""
    return g.t("agenda.invalid", detail=error_text(g.t, "agenda", exc))


@bp.get("/agenda")
@requires("view")
def agenda() -> Response:
    return _agenda_page()


@bp.post("/agenda")
@requires("manage_agenda")
def agenda_add() -> Response:
    body = {k: request.form[k] for k in (*AGENDA_FIELDS, "slug") if k in request.form}
    try:
        activity = agenda_api.create(body)
    except AgendaError as exc:
        return _agenda_page(400, error=_agenda_error(exc), form=request.form)
    _fresh()
    return redirect(url_for("desk.activity", slug=activity.slug, ok="added"), 303)


def _activity_page(slug: str, status: int = 200, error: str | None = None,
                   form: MultiDict[str, str] | None = None) -> Response:
    activity: Activity | None = None
    if slug != SIN_ACTIVIDAD:
        activity = web().agenda.get(slug)
        if activity is None:
            abort(404)
    page = browse.page_number()
    size = web().config.web.page_size
    result = browse.paged(ItemQuery(activity=slug, order="captured", limit=size,
                                    offset=(page - 1) * size), page)
    return make_response(render_template(
        "activity.html", activity=activity, slug=slug, result=result,
        current=web().agenda.current(), areas=web().index.areas(), error=error, form=form,
        ok=_ok(AGENDA_OK)), status)


@bp.get("/agenda/<slug>")
@requires("view")
def activity(slug: str) -> Response:
    return _activity_page(slug)


def _known_activity(slug: str) -> str:
    try:
        check_slug(slug)
    except AgendaError:
        abort(404)
    if web().agenda.get(slug) is None:
        abort(404)
    return slug


@bp.post("/agenda/<slug>/editar")
@requires("manage_agenda")
def activity_change(slug: str) -> Response:
    _known_activity(slug)
    body = {k: request.form[k] for k in AGENDA_FIELDS if k in request.form}
    try:
        web().agenda.update(slug, **agenda_api.parse_fields(body, partial=True))
    except AgendaError as exc:
        return _activity_page(slug, 400, error=_agenda_error(exc), form=request.form)
    log.info("%s changed activity %s", g.user.name, slug)
    _fresh()
    return redirect(url_for("desk.activity", slug=slug, ok="saved"), 303)


@bp.post("/agenda/<slug>/eliminar")
@requires("manage_agenda")
def activity_remove(slug: str) -> Response:
    _known_activity(slug)
    try:
        web().agenda.remove(slug)
    except AgendaError:
        abort(404)  # removed by someone else meanwhile
    log.info("%s removed activity %s", g.user.name, slug)
    _fresh()
    return redirect(url_for("desk.agenda", ok="removed"), 303)


@bp.post("/agenda/actual")
@requires("manage_agenda")
def set_current() -> Response:
    """`activity`: a slug of the agenda, or empty to clear; back to `next` (this box only)."""
    slug = request.form.get("activity", "")
    if slug and web().agenda.get(slug) is None:
        return _agenda_page(400, error=g.t("refile.unknown"))
    web().agenda.set_current(slug or None)
    log.info("%s set the current activity to %s", g.user.name, slug or None)
    target = request.form.get("next") or url_for("desk.agenda", ok="current")
    return redirect(safe_next(target), 303)


# -- one item: describe and pick, approve, re-file ------------------------------------------


def _record(sha256: str) -> dict[str, Any]:
    present.check_sha256(sha256)
    record = web().index.get(sha256)
    if record is None:
        abort(404)
    return record


def _item_page(record: dict[str, Any], status: int, **extra: Any) -> Response:
    """The item page as browse.item renders it, with a form's error or conflict."""
    sha = record["sha256"]
    previous, following = web().index.neighbours(sha)
    activity = web().agenda.get(record["activity"]) if record.get("activity") else None
    return make_response(render_template(
        "item.html", item=present.item(record, history=True), previous=previous,
        following=following, activity=activity, **extra), status)


def _back_to_item(sha256: str, ok: str) -> Response:
    return redirect(url_for("browse.item", sha256=sha256, ok=ok), 303)


def split_list(text: str) -> list[str]:
    """"Ana López, Luis" -> ["Ana López", "Luis"] (tags and people typed in one field)."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _same_text(a: str, b: str) -> bool:
    # a browser sends a textarea's line breaks as CR LF
    return a.replace("\r\n", "\n").strip() == b.replace("\r\n", "\n").strip()


def form_changes(form: MultiDict[str, str]) -> dict[str, Any]:
    """The edit a form asks for: only the fields that differ from the values the page was
    rendered with (`was_FIELD`), so a field the user did not touch never conflicts with
    someone else's change of it; pick and rating come from the button pressed."""
    changes: dict[str, Any] = {}
    for key in TEXT_FIELDS:
        if key in form and not (f"was_{key}" in form
                                and _same_text(form[key], form[f"was_{key}"])):
            changes[key] = form[key]
    for key in LIST_FIELDS:
        if key in form:
            value = split_list(form[key])
            if f"was_{key}" not in form or value != split_list(form[f"was_{key}"]):
                changes[key] = value
    if "pick" in form:
        changes["pick"] = form["pick"] or None
    if "rating" in form:
        try:
            changes["rating"] = int(form["rating"])
        except ValueError:
            changes["rating"] = form["rating"]  # refused by the editor's check, with its name
    return changes


def _display(field: str, value: Any) -> str:
    t = g.t
    if field == "pick":
        return t(f"pick.{value or 'none'}")
    if isinstance(value, list):
        return ", ".join(value)
    return str(value) if value not in (None, "") else t("history.empty_value")


def conflict_lines(fields: dict[str, dict[str, Any]]) -> list[str]:
    """"Luis cambió el pie de foto a «…» a las 10:42", one per field."""
    t = g.t
    lines = []
    for field, info in fields.items():
        key = f"conflict.{field}"
        value = _display(field, info.get("value"))
        if key in t.messages:
            lines.append(t(key, by=info.get("by", ""), value=value, time=t.time(info.get("at"))))
        else:
            lines.append(f"{info.get('by', '')}: {field} = {value}")
    return lines


@bp.post("/item/<sha256>/editar")
@requires("edit_items")
def item_edit(sha256: str) -> Response:
    record = _record(sha256)
    form = request.form
    changes = form_changes(form)
    raw_base = form.get("base_revision", "")
    if raw_base and not raw_base.isdigit():
        abort(400)
    base = int(raw_base) if raw_base else None
    if not changes:
        return _back_to_item(sha256, "saved")
    # A page shown again keeps what this user typed, and only that: a field filled from the
    # form although untouched would read as "changed" against the fresh record, and the next
    # save (the 409 page's "save mine anyway") would revert someone else's edit of it.
    typed = {key: form[key] for key in changes if key in TEXT_FIELDS + LIST_FIELDS}
    try:
        make_editor().edit(sha256, changes, by=g.user.name, base_revision=base)
    except NotFound:
        abort(404)
    except EditError as exc:
        return _item_page(record, 400, edit_form=typed, edit_error=g.t(
            "edit.invalid", detail=error_text(g.t, "edit", exc)))
    except EditConflict as exc:
        _fresh()
        return _item_page(web().index.get(sha256) or record, 409, edit_form=typed,
                          conflicts=conflict_lines(exc.fields))
    return _back_to_item(sha256, "saved")


@bp.post("/item/<sha256>/aprobacion")
@requires("approve")
def item_approval(sha256: str) -> Response:
    """`approved`: 1 approves, 0 withdraws the approval."""
    record = _record(sha256)
    approved = request.form.get("approved")
    raw_base = request.form.get("base_revision", "")
    if approved not in ("1", "0") or (raw_base and not raw_base.isdigit()):
        abort(400)
    editor = make_editor()
    try:
        if approved == "1":  # what the page showed, not what someone typed meanwhile
            editor.approve([sha256], by=g.user.name,
                           base_revisions={sha256: int(raw_base)} if raw_base else None)
        else:
            editor.withdraw([sha256], by=g.user.name)
    except NotFound:
        abort(404)
    except EditConflict as exc:
        _fresh()
        return _item_page(web().index.get(sha256) or record, 409,
                          approval_conflicts=conflict_lines(exc.fields))
    log.info("%s %s %s", g.user.name, "approved" if approved == "1" else "withdrew", sha256)
    return _back_to_item(sha256, "approved" if approved == "1" else "withdrawn")


@bp.post("/item/<sha256>/mover")
@requires("edit_items")
def item_refile(sha256: str) -> Response:
    """`activity`: a slug of the agenda, or empty for the day's "sin actividad"."""
    record = _record(sha256)
    slug = request.form.get("activity", "")
    if slug == SIN_ACTIVIDAD:
        slug = ""
    if slug and web().agenda.get(slug) is None:
        return _item_page(record, 400, refile_error=g.t("refile.unknown"))
    from appliance.refile import RefileError, Refiler

    try:
        Refiler(web().config, on_written=web().index.apply_changes).refile(
            [sha256], slug or None, by=g.user.name)
    except RefileError as exc:
        return _item_page(record, 400, refile_error=g.t(
            "refile.failed", detail=error_text(g.t, "refile", exc)))
    log.info("%s re-filed %s to %s", g.user.name, sha256, slug or SIN_ACTIVIDAD)
    return _back_to_item(sha256, "refiled")


# -- a ZIP of a selection ----------------------------------------------------------------


@bp.post("/descargas/zip")
@requires("download")
def zip_download() -> Response:
    """Repeated `sha256` fields and `variant` (`original` or `web`): a plain form post, so
    the browser streams the ZIP to disk as it is made (nothing held in the page)."""
    shas = request.form.getlist("sha256")
    if not shas:
        abort(400)
    if len(shas) > web().config.editorial.zip_max_items:
        abort(413)
    if not all(present.SHA256.match(sha) for sha in shas):
        abort(400)
    return stream_zip(shas, request.form.get("variant", "original"))


# -- for the templates -------------------------------------------------------------------


def _datetime_input(moment: datetime) -> str:
    """An activity's time as a `datetime-local` field shows it: local to the kit."""
    return moment.astimezone(web().config.zone).strftime("%Y-%m-%dT%H:%M")


def _history_value(field: str, value: Any) -> str:
    if field == "activity":
        return browse._activity_title(value or "")
    if field == "pick":
        return g.t(f"pick.{value or 'none'}")
    if value in (None, "", []):
        return g.t("history.empty_value")
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    editorial = web().config.editorial
    return {"agenda_activities": web().agenda.activities, "credit_presets":
            editorial.credit_presets, "rights_line": editorial.rights,
            "datetime_input": _datetime_input, "history_value": _history_value,
            "split_list": split_list, "SIN_ACTIVIDAD": SIN_ACTIVIDAD}
