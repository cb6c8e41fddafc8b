"""Editing, approving, re-filing and delivering items: the JSON API the editorial pages use.

Handlers stay thin: check the request and the role, call appliance.editorial (or refile,
delivery), answer. A stale edit comes back as 409 with the fields someone else changed, so
the page can show them instead of overwriting (see appliance/editorial.py).
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Blueprint, Response, abort, g, jsonify, request, send_file, stream_with_context

from appliance.editorial import EditConflict, EditError, Editor, NotFound
from appliance.web import present
from appliance.web.context import web
from appliance.web.i18n import error_text
from appliance.web.security import can, error_json, is_api, json_object, requires

log = logging.getLogger(__name__)
bp = Blueprint("editing", __name__, url_prefix="/api")

MAX_SELECTION = 5000


def _selection(body: dict[str, Any], limit: int = MAX_SELECTION) -> list[str]:
    shas = body.get("sha256")
    if not isinstance(shas, list) or not shas or not all(isinstance(s, str) for s in shas):
        abort(400, "sha256 must be a non-empty list of content hashes")
    if len(shas) > limit:
        abort(413, f"at most {limit} items at once")
    for sha in shas:
        if not present.SHA256.match(sha):
            abort(400, f"not a content hash: {sha[:80]!r}")
    return list(dict.fromkeys(shas))


def make_editor() -> Editor:
    """An Editor whose writes go into the query index at once, from the records written
    (ItemIndex.apply_changes): the page or item fetched next (the editor's script reloads
    parts of the page) must show them, and carry their revision."""
    return Editor(web().data, node=web().config.kit.name,
                  on_written=web().index.apply_changes)


def _conflict(exc: EditConflict) -> Response:
    response = jsonify({"error": "conflict", "message": str(exc), "fields": exc.fields,
                        "revision": exc.revision})
    response.status_code = 409
    return response


@bp.patch("/items/<sha256>")
@requires("edit_items")
def edit(sha256: str) -> Response:
    """Any of caption, tags, people, credit, place, pick, rating (and add_tags,
    remove_tags); with `base_revision`, fields changed by someone else since then are a 409."""
    present.check_sha256(sha256)
    changes = json_object()
    base = changes.pop("base_revision", None)
    if base is not None and (isinstance(base, bool) or not isinstance(base, int)):
        abort(400, "base_revision must be a whole number")
    try:
        record = make_editor().edit(sha256, changes, by=g.user.name, base_revision=base)
    except NotFound:
        abort(404)
    except EditError as exc:
        return error_json(400, "invalid", error_text(g.t, "edit", exc))
    except EditConflict as exc:
        return _conflict(exc)
    return jsonify(present.item(record, history=True))


@bp.post("/items/batch")
@requires("edit_items")
def edit_selection() -> Response:
    """The same change on a selection: `{"sha256": [...], "changes": {...}}`, and with
    `"base_revisions": {sha256: revision}` an item whose changed field someone else edited
    since is left alone and listed in the answer's `conflicts` (who changed what, when)."""
    body = json_object()
    shas = _selection(body)
    changes = body.get("changes")
    if not isinstance(changes, dict) or not changes:
        abort(400, "changes must be an object of fields")
    bases = _base_revisions(body)
    conflicts: list[EditConflict] = []
    try:
        records = make_editor().edit_many(shas, changes, by=g.user.name,
                                          base_revisions=bases, conflicts=conflicts)
    except NotFound as exc:
        return error_json(404, "not_found", f"no item {exc}")
    except EditError as exc:
        return error_json(400, "invalid", error_text(g.t, "edit", exc))
    log.info("%s edited %d items (%s)%s", g.user.name, len(records) - len(conflicts),
             ", ".join(changes), f"; {len(conflicts)} changed meanwhile, left" if conflicts
             else "")
    return jsonify({"items": present.items(records), "conflicts": _conflicts(conflicts)})


def _approved(shas: list[str], approve: bool, bases: dict[str, int] | None = None
              ) -> tuple[list[dict[str, Any]], list[EditConflict]]:
    """Approve (or withdraw) items: (their records, the conflicts). With `bases` (each
    item's revision as the page showed it), an item someone else re-captioned since is left
    unapproved, in the conflicts. NotFound for an unknown item."""
    editor = make_editor()
    conflicts: list[EditConflict] = []
    if approve:
        records = editor.approve(shas, by=g.user.name, base_revisions=bases,
                                 conflicts=conflicts)
    else:
        records = editor.withdraw(shas, by=g.user.name)
    log.info("%s %s %d items%s", g.user.name, "approved" if approve else "withdrew",
             len(records) - len(conflicts),
             f"; {len(conflicts)} changed meanwhile, left" if conflicts else "")
    return records, conflicts


def _approval_of_one(sha256: str, approve: bool, base: int | None = None) -> Response:
    """The item's record; 409 conflict when, from `base`, it changed meanwhile."""
    try:
        records, conflicts = _approved([sha256], approve,
                                       None if base is None else {sha256: base})
    except NotFound as exc:
        return error_json(404, "not_found", f"no item {exc}")
    if conflicts:
        return _conflict(conflicts[0])
    return jsonify(present.item(records[0]))


def _conflicts(found: list[EditConflict]) -> list[dict[str, Any]]:
    return [{"sha256": c.sha256, "fields": c.fields, "revision": c.revision} for c in found]


def _base_revisions(body: dict[str, Any]) -> dict[str, int] | None:
    bases = body.get("base_revisions")
    if bases is not None and not (isinstance(bases, dict) and all(
            isinstance(v, int) and not isinstance(v, bool) for v in bases.values())):
        abort(400, "base_revisions must map sha256 to a revision number")
    return bases


@bp.post("/items/<sha256>/approve")
@requires("approve")
def approve(sha256: str) -> Response:
    """With `{"base_revision": N}` (the page's revision), a 409 conflict when someone else
    changed the caption, tags, people, credit or place since: nothing is approved."""
    present.check_sha256(sha256)
    body = json_object() if request.get_data() else {}
    base = body.get("base_revision")
    if base is not None and (isinstance(base, bool) or not isinstance(base, int)):
        abort(400, "base_revision must be a whole number")
    return _approval_of_one(sha256, True, base)


@bp.post("/items/<sha256>/withdraw")
@requires("approve")
def withdraw(sha256: str) -> Response:
    present.check_sha256(sha256)
    return _approval_of_one(sha256, False)


@bp.post("/items/approval")
@requires("approve")
def approve_selection() -> Response:
    """`{"sha256": [...], "approved": true|false}` for a selection."""
    body = json_object()
    if not isinstance(body.get("approved"), bool):
        abort(400, "approved must be true or false")
    try:
        records, conflicts = _approved(_selection(body), body["approved"],
                                       _base_revisions(body))
    except NotFound as exc:
        return error_json(404, "not_found", f"no item {exc}")
    return jsonify({"items": present.items(records), "conflicts": _conflicts(conflicts)})


@bp.post("/items/refile")
@requires("edit_items")
def refile() -> Response:
    """`{"sha256": [...], "activity": SLUG or null}`: move items to an agenda activity (or
    back to their day's sin-actividad); the files move in the archive."""
    from appliance.refile import RefileError, Refiler

    body = json_object()
    shas = _selection(body, limit=500)
    activity = body.get("activity")
    if activity is not None and not isinstance(activity, str):
        abort(400, "activity must be a slug or null")
    try:
        records = Refiler(web().config, on_written=web().index.apply_changes).refile(
            shas, activity, by=g.user.name)
    except RefileError as exc:
        return error_json(400, "refile", error_text(g.t, "refile", exc))
    log.info("%s re-filed %d items to %s", g.user.name, len(records), activity)
    return jsonify({"items": present.items(records)})


def check_publishable(records: list[dict[str, Any]], variant: str) -> None:
    """Only approved items leave as web-size copies (the social-media variant), except for
    those who approve (design: Dirección decides what may be published). Originals are
    staff material and follow the `download` permission alone."""
    if variant != "web" or can("approve"):
        return
    pending = [r["original_name"] for r in records if not r.get("approved")]
    if pending:
        names = ", ".join(pending[:5]) + (" …" if len(pending) > 5 else "")
        abort(409, f"not approved for publication: {names}" if is_api()
              else g.t("error.not_approved", names=names))


@bp.get("/items/<sha256>/download")
@requires("download")
def download(sha256: str) -> Response:
    """`variant=original` (the file as archived) or `web` (the web-size JPEG)."""
    from appliance.delivery import web_copy

    present.check_sha256(sha256)
    variant = request.args.get("variant", "original")
    if variant not in ("original", "web"):
        abort(400, "variant must be original or web")
    record = web().index.get(sha256)
    if record is None:
        abort(404)
    if variant == "original":
        from appliance.web.media import original

        return original(sha256)
    check_publishable([record], variant)
    try:
        path = web_copy(web().config, web().data, record)
    except ValueError as exc:
        return error_json(400, "variant", str(exc))
    stem = record["original_name"].rsplit(".", 1)[0]
    response = send_file(path, mimetype="image/jpeg", as_attachment=True,
                         download_name=present.download_name(f"{stem}-web.jpg"),
                         conditional=True, etag=True, max_age=None)
    # Its caption and credit change with the record: asked again each time (a 304 while
    # the same), and kept by no shared cache (login-only content).
    response.headers["Cache-Control"] = "private, no-cache"
    return response


def stream_zip(shas: list[str], variant: str) -> Response:
    """A ZIP of the items, streamed as it is made (for the API and the page's form)."""
    from appliance.delivery import TooManyItems, zip_name, zip_stream

    if variant not in ("original", "web"):
        abort(400, "variant must be original or web")
    records = []
    for sha in dict.fromkeys(shas):
        record = web().index.get(sha)
        if record is None:
            abort(404, f"no item {sha}")
        records.append(record)
    check_publishable(records, variant)
    config = web().config
    try:  # what zip_stream can check is checked before the first byte goes out
        stream = zip_stream(web().data, records, variant=variant, config=config)
    except TooManyItems as exc:
        abort(413, str(exc))
    log.info("%s downloads a ZIP of %d items (%s)", g.user.name, len(records), variant)
    response = Response(stream_with_context(stream), mimetype="application/zip")
    response.headers["Content-Disposition"] = \
        f'attachment; filename="{zip_name(records, variant=variant, config=config)}"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/zip")
@requires("download")
def zip_download() -> Response:
    """`{"sha256": [...], "variant": "original"|"web"}`: a ZIP streamed as it is made."""
    body = json_object()
    shas = _selection(body, limit=web().config.editorial.zip_max_items)
    return stream_zip(shas, body.get("variant", "original"))


@bp.post("/items/<sha256>/fetch")
@requires("download")
def fetch(sha256: str) -> Response:
    """Bring an evicted original back from the hub (verified byte for byte)."""
    from sync.kit.client import HubCorrupt, SyncError
    from sync.kit.evict import FetchError, fetch_back

    present.check_sha256(sha256)
    record = web().index.get(sha256)
    if record is None:
        abort(404)
    try:
        fetch_back(web().config, sha256)
    except (FetchError, HubCorrupt) as exc:
        return error_json(409, "fetch", str(exc))
    except (SyncError, OSError) as exc:  # the hub unreachable or refusing, the disk full
        return error_json(503, "fetch", f"could not fetch it now: {exc}")
    log.info("%s fetched %s back from the hub", g.user.name, sha256[:12])
    return jsonify(present.item(record))
