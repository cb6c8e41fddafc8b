"""The JSON API behind the pages (documented in the README; a test fails on an undocumented
route). Writes need the `X-CSRF-Token` header; every route needs a login."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from flask import Blueprint, Response, abort, g, jsonify, request

from appliance.accounts import ROLES, AccountError
from appliance.config import Config
from appliance.web import present
from appliance.web.browse import search_query
from appliance.web.context import web
from appliance.web.security import error_json, json_object, requires

log = logging.getLogger(__name__)
bp = Blueprint("api", __name__, url_prefix="/api")

MAX_LIMIT = 500


def _int_arg(name: str, default: int, low: int, high: int) -> int:
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        abort(400, f"{name} must be a whole number")
    if not low <= value <= high:
        abort(400, f"{name} must be between {low} and {high}")
    return value


@bp.get("/items")
@requires("view")
def items() -> Response:
    limit = _int_arg("limit", web().config.web.page_size, 1, MAX_LIMIT)
    offset = _int_arg("offset", 0, 0, 10**9)
    query = dataclasses.replace(search_query(1, limit), offset=offset)
    found, total = web().index.search(query)
    return jsonify({"items": present.items(found), "total": total, "limit": limit,
                    "offset": offset, "latest_import": web().index.latest_import()})


@bp.get("/items/<sha256>")
@requires("view")
def item(sha256: str) -> Response:
    present.check_sha256(sha256)
    record = web().index.get(sha256)
    if record is None:
        abort(404)
    previous, following = web().index.neighbours(sha256)
    return jsonify({**present.item(record, history=True), "previous": previous,
                    "next": following})


@bp.get("/months")
@requires("view")
def months() -> Response:
    return jsonify({"months": web().index.months()})


@bp.get("/months/<month>")
@requires("view")
def month(month: str) -> Response:
    present.check_month(month)
    return jsonify({"month": month, "folders": web().index.folders(month)})


@bp.get("/status")
@requires("view")
def status() -> Response:
    return jsonify(web().status.snapshot())


@bp.post("/devices/<device_id>/record")
@requires("record")
def record(device_id: str) -> Response:
    """Start or stop a microphone or webcam. Stopping imports the file in the background
    (a long recording takes a while to verify); the status shows it arriving."""
    from ingest.devices.capture import Recorder, RecordError
    from ingest.devices.state import DeviceStates

    body = request.get_json(silent=True) or {}
    action = body.get("action") if isinstance(body, dict) else None
    if action not in ("start", "stop"):
        abort(400, "action must be start or stop")
    device = DeviceStates(web().data.state).get(device_id)
    if device is None or device.kind not in ("microphone", "webcam"):
        abort(404)
    recorder = Recorder.from_config(web().config)
    try:
        if action == "start":
            activity = web().agenda.current()
            recording = recorder.start(device, activity)
            log.info("%s started recording on %s", g.user.name, device_id)
            return jsonify({"recording": recording.as_dict()})
        path = recorder.stop(device_id)
    except RecordError as exc:
        return error_json(409, "record", str(exc))
    log.info("%s stopped recording on %s", g.user.name, device_id)
    web().background.submit(_import_recording, web().config, path)
    return jsonify({"stopped": str(path.name)})


def _import_recording(config: Config, path: Path) -> None:
    from ingest.devices.capture import Recorder, import_recording

    try:
        activity = Recorder.from_config(config).activity_for(path)
        summary = import_recording(config, path, activity)
    except Exception:
        log.exception("recording %s was not imported; `acopio record recover` retries it",
                      path.name)
        return
    if not summary.ok:
        log.error("recording %s was not imported (%s); `acopio record recover` retries it",
                  path.name, summary.stopped or summary.failed)


@bp.get("/users")
@requires("manage_users")
def users() -> Response:
    return jsonify({"users": [u.to_public() for u in web().users.list()]})


@bp.post("/users")
@requires("manage_users")
def add_user() -> Response:
    body = json_object()
    fields = {k: body.get(k) for k in ("username", "role", "password")}
    if not all(isinstance(v, str) for v in fields.values()) or fields["role"] not in ROLES:
        abort(400, "username, role (one of " + ", ".join(ROLES) + ") and password are needed")
    try:
        user = web().users.add(fields["username"], fields["role"], fields["password"])
    except AccountError as exc:
        return error_json(400, "account", str(exc))
    log.info("%s created user %s (%s)", g.user.name, user.name, user.role)
    response = jsonify({"user": user.to_public()})
    response.status_code = 201
    return response


@bp.delete("/users/<name>")
@requires("manage_users")
def remove_user(name: str) -> Response:
    if name == g.user.name:
        abort(409, "you cannot remove yourself")
    try:
        web().users.remove(name)
    except AccountError as exc:
        return error_json(409 if "last" in str(exc) else 404, "account", str(exc))
    web().sessions.end_all(name)
    log.info("%s removed user %s", g.user.name, name)
    return jsonify({"ok": True})
