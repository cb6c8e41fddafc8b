"""The hub's wire protocol under /sync/ (README "Sync with headquarters"): a Flask blueprint
registered by `create_app(config, hub=True)`.

Every route but `POST /sync/pair` needs `Authorization: Bearer <kit token>` (401 JSON
otherwise). These routes use no cookies, so the web UI's session and CSRF checks do not
apply to them (appliance.web.security lets /sync/ through to this blueprint after the Host
allowlist); a browser never sends the token by itself, so a cross-site page cannot use it.

tus 1.0 (core, creation, creation-with-upload, checksum, termination) at /sync/files/:
a creation may carry the first bytes (a kit sends a file that fits in one chunk in the one
request, saving a round trip per photo); every response carries
`Tus-Resumable: 1.0.0`; a request with another version gets 412 with `Tus-Version`. PATCH
bodies are read from the WSGI input in 1 MiB buffers and appended to the upload's file (the
web UI's 1 MiB request limit does not apply to them; waitress itself spools a request body to
`state/hub/spool/` before the app sees it, see sync.hub.server).
"""

from __future__ import annotations

import logging
import re
from typing import Any

from flask import Blueprint, Flask, Response, current_app, g, jsonify, request, send_file

from appliance.accounts import LoginThrottle
from sync.hub.kits import NameTaken, PairingError
from sync.hub.ledger import Hub
from sync.hub.uploads import (
    CHECKSUMS,
    Upload,
    UploadError,
    encode_metadata,
    is_sha256,
    parse_checksum,
)
from sync.hub.uploads import parse_metadata as parse_upload_metadata

log = logging.getLogger(__name__)
CURSOR = re.compile(r"[0-9a-f]{1,64}-[0-9]{1,19}")  # sync.hub.changes

bp = Blueprint("sync", __name__, url_prefix="/sync")
EXTENSION = "acopio.hub"
TUS_VERSION = "1.0.0"
TUS_EXTENSIONS = "creation,creation-with-upload,checksum,termination"
OFFSET_TYPE = "application/offset+octet-stream"
MAX_RECORDS = 500
MAX_RECORDS_BODY = 32 * 1024 * 1024
IMMUTABLE = "private, max-age=31536000, immutable"


def hub() -> Hub:
    return current_app.extensions[EXTENSION]


def install(app: Flask, hub_core: Hub) -> None:
    app.extensions[EXTENSION] = hub_core
    app.extensions[EXTENSION + ".throttle"] = LoginThrottle(
        hub_core.config.web.login_attempts, hub_core.config.web.login_window_s)
    app.register_blueprint(bp)


def _error(status: int, code: str, message: str, **extra: Any) -> Response:
    response = jsonify({"error": code, "message": message, **extra})
    response.status_code = status
    if status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="acopio-hub"'
    if status == 412:
        response.headers["Tus-Version"] = TUS_VERSION
    if "offset" in extra:
        response.headers["Upload-Offset"] = str(extra["offset"])
    return response


@bp.errorhandler(UploadError)
def _upload_error(exc: UploadError) -> Response:
    if exc.status >= 500:
        log.error("sync: %s %s by %s: %s", request.method, request.path, g.get("kit"),
                  exc.message)
    return _error(exc.status, exc.code, exc.message, **exc.extra)


@bp.after_app_request
def _tus_headers(response: Response) -> Response:
    if request.path.startswith("/sync/"):
        response.headers["Tus-Resumable"] = TUS_VERSION
        response.headers.setdefault("Cache-Control", "no-store")
    return response


@bp.before_request
def _authenticate() -> Response | None:
    if request.endpoint == "sync.pair":
        return None
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    kit = hub().kits.authenticate(token.strip()) if scheme.lower() == "bearer" else None
    if kit is None:
        return _error(401, "unauthorized", "a valid kit token is needed "
                      "(Authorization: Bearer <token>; pair with `acopio sync pair`)")
    g.kit = kit
    hub().contacts.seen(kit, request.remote_addr)
    if request.path.startswith("/sync/files") and request.method != "OPTIONS":
        version = request.headers.get("Tus-Resumable")
        if version != TUS_VERSION:
            return _error(412, "unsupported_version",
                          f"Tus-Resumable must be {TUS_VERSION} (got {version!r})")
    return None


# -- pairing ---------------------------------------------------------------------------------


@bp.post("/pair")
def pair() -> Response:
    throttle: LoginThrottle = current_app.extensions[EXTENSION + ".throttle"]
    address = request.remote_addr or "?"
    wait = throttle.attempt(address, "pair")
    if wait > 0:
        response = _error(429, "too_many_attempts", "too many wrong pairing codes; wait")
        response.headers["Retry-After"] = str(int(wait) + 1)
        return response
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        throttle.not_a_guess(address, "pair")
        return _error(400, "bad_request", 'send JSON {"code": ..., "kit": ..., "kit_id": ...}')
    try:
        token = hub().kits.redeem(body.get("code"), body.get("kit"), body.get("kit_id"))
    except NameTaken as exc:
        throttle.not_a_guess(address, "pair")
        log.warning("refused pairing of %r from %s: %s", body.get("kit"), address, exc)
        return _error(409, "name_taken", str(exc))
    except PairingError as exc:
        if "kit name" not in str(exc):  # counted by attempt()
            log.warning("refused pairing of %r from %s: %s", body.get("kit"), address, exc)
            return _error(403, "pairing_refused", str(exc))
        throttle.not_a_guess(address, "pair")
        return _error(400, "bad_kit_name", str(exc))
    throttle.succeeded(address, "pair")
    log.info("kit %s paired from %s", body["kit"], address)
    return jsonify({"kit": body["kit"], "token": token, "hub": hub().config.kit.name})


@bp.get("/whoami")
def whoami() -> Response:
    return jsonify({"kit": g.kit, "hub": hub().config.kit.name})


# -- tus -------------------------------------------------------------------------------------


def _int_header(name: str, *, required: bool = True) -> int | None:
    value = request.headers.get(name)
    if value is None:
        if required:
            raise UploadError(400, "missing_header", f"{name} is required")
        return None
    value = value.strip()
    if not value.isascii() or not value.isdigit() or len(value) > 20:
        raise UploadError(400, "bad_header", f"{name} must be a non-negative integer")
    return int(value)


def _tus_options() -> dict[str, str]:
    return {"Tus-Version": TUS_VERSION, "Tus-Extension": TUS_EXTENSIONS,
            "Tus-Checksum-Algorithm": ",".join(CHECKSUMS),
            "Tus-Max-Size": str(hub().max_upload)}


@bp.route("/files", methods=["OPTIONS"], strict_slashes=False,
          provide_automatic_options=False)
@bp.route("/files/<upload_id>", methods=["OPTIONS"], provide_automatic_options=False)
def files_options(upload_id: str | None = None) -> Response:
    return Response(status=204, headers=_tus_options())


@bp.post("/files", strict_slashes=False, provide_automatic_options=False)
def create() -> Response:
    if request.headers.get("Upload-Defer-Length"):
        raise UploadError(400, "unsupported", "Upload-Defer-Length is not supported: "
                          "announce Upload-Length")
    length = _int_header("Upload-Length")
    assert length is not None
    if length > hub().max_upload:
        raise UploadError(413, "too_large", f"Upload-Length {length} is over the hub's limit "
                          f"of {hub().max_upload} bytes (hub.max_upload_gb)")
    metadata = parse_upload_metadata(request.headers.get("Upload-Metadata"))
    body_length = request.content_length or 0
    checksum = None
    if body_length:  # creation-with-upload: the first bytes come with the creation
        _check_offset_type()
        checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    upload = hub().create_upload(g.kit, length, metadata)
    if body_length and not upload.done:
        # Bytes whose checksum fails leave the upload created at offset 0: the answer says
        # so and the client goes on with PATCH, as tus says.
        with hub().uploads.locked(g.kit, upload.id) as current:
            try:
                upload = _append(current, 0, body_length, checksum)
            except UploadError as exc:
                if exc.code != "checksum_mismatch" or \
                        hub().uploads.get(g.kit, upload.id) is None:
                    # refused whole (or a whole file that is not what was announced,
                    # dropped already): the client never learns this upload's URL
                    hub().uploads.delete(current)
                    raise
                log.info("kit %s: the first bytes sent with upload %s were refused (%s)",
                         g.kit, upload.id, exc.message)
    headers = {"Location": f"/sync/files/{upload.id}", "Upload-Offset": str(upload.offset)}
    return Response(status=201, headers=headers)


def _check_offset_type() -> None:
    content_type = (request.headers.get("Content-Type") or "").split(";")[0].strip().lower()
    if content_type != OFFSET_TYPE:
        raise UploadError(415, "bad_content_type", f"upload bytes need Content-Type: "
                          f"{OFFSET_TYPE}")


def _append(upload: Upload, offset: int, content_length: int | None,
            checksum: tuple[str, bytes] | None) -> Upload:
    """A request's body appended at `offset` (under the upload's lock); a file whose last
    byte came is checked whole and left to the keeper (after this answer)."""
    upload = hub().uploads.append(upload, offset, request.environ["wsgi.input"],
                                  content_length, checksum)
    if upload.complete and not upload.done:
        hub().finish(upload, wait=False)
    return upload


@bp.route("/files/<upload_id>", methods=["HEAD"], provide_automatic_options=False)
def head(upload_id: str) -> Response:
    upload = hub().uploads.get(g.kit, upload_id)
    if upload is None:
        return Response(status=404)
    if upload.complete and not upload.done and not hub().keeper.busy_with(upload.sha256):
        # the last PATCH was answered but the hub stopped before keeping it
        try:
            with hub().uploads.locked(g.kit, upload_id) as current:
                if not current.done:
                    hub().finish(current)
        except UploadError as exc:
            if exc.status in (404, 460):
                return Response(status=404)
            if exc.status != 423:
                raise
    headers = {"Upload-Offset": str(hub().uploads.on_disk(upload)),
               "Upload-Length": str(upload.length), "Cache-Control": "no-store"}
    if upload.metadata:
        headers["Upload-Metadata"] = encode_metadata(upload.metadata)
    return Response(status=200, headers=headers)


@bp.route("/files/<upload_id>", methods=["PATCH"], provide_automatic_options=False)
def patch(upload_id: str) -> Response:
    _check_offset_type()
    offset = _int_header("Upload-Offset")
    assert offset is not None
    checksum = parse_checksum(request.headers.get("Upload-Checksum"))
    with hub().uploads.locked(g.kit, upload_id) as upload:
        upload = _append(upload, offset, request.content_length, checksum)
    return Response(status=204, headers={"Upload-Offset": str(upload.offset)})


@bp.route("/files/<upload_id>", methods=["DELETE"], provide_automatic_options=False)
def terminate(upload_id: str) -> Response:
    with hub().uploads.locked(g.kit, upload_id) as upload:
        hub().uploads.delete(upload)
    return Response(status=204)


# -- objects ---------------------------------------------------------------------------------


@bp.get("/objects/<sha256>")
def object_status(sha256: str) -> Response:
    if not is_sha256(sha256):
        return _error(400, "bad_sha256", "an object is named by 64 lower-case hex digits")
    verify = request.args.get("verify", "") in ("1", "true", "yes")
    answer = hub().object_status(g.kit, sha256, verify=verify)
    if answer is None:
        pending = hub().pending(g.kit).get(sha256) is not None
        return _error(404, "not_found", "the hub holds no verified original of this content "
                      "from this kit: send it", pending=pending)
    if not answer["verified"]:
        return _error(409, "corrupt", "the hub's copy failed verification and was dropped: "
                      "send it again", **{k: v for k, v in answer.items()
                                          if k not in ("error", "message")})
    return jsonify(answer)


MAX_ASKED = 1000  # contents asked about in one `POST /sync/objects/missing`


@bp.post("/objects/missing")
def objects_missing() -> Response:
    """`{"sha256": [...]}`, contents the hub acknowledged to this kit: `{"missing": [...]}`,
    those it no longer holds (the kit sends them again)."""
    body = request.get_json(silent=True)
    asked = body.get("sha256") if isinstance(body, dict) else None
    if not isinstance(asked, list) or len(asked) > MAX_ASKED or \
            not all(isinstance(s, str) and is_sha256(s) for s in asked):
        return _error(400, "bad_request", f"expected {{\"sha256\": [...]}}, at most "
                      f"{MAX_ASKED} contents of 64 lower-case hex digits")
    return jsonify({"missing": hub().missing(g.kit, asked)})


@bp.get("/objects/<sha256>/content")
def object_content(sha256: str) -> Response:
    if not is_sha256(sha256):
        return _error(400, "bad_sha256", "an object is named by 64 lower-case hex digits")
    record = hub().owned(g.kit, sha256)
    path = hub().original_path(record) if record else None
    if record is None or path is None:
        return _error(404, "not_found", "no such object for this kit")
    response = send_file(path, mimetype="application/octet-stream", as_attachment=True,
                         download_name=path.name, conditional=True, etag=sha256,
                         max_age=None)
    response.headers["Cache-Control"] = IMMUTABLE
    return response


# -- metadata --------------------------------------------------------------------------------


@bp.post("/records")
def records() -> Response:
    request.max_content_length = MAX_RECORDS_BODY
    body = request.get_json(silent=True)
    batch = body.get("records", []) if isinstance(body, dict) else None
    agenda = body.get("agenda", []) if isinstance(body, dict) else None
    if not isinstance(batch, list) or not isinstance(agenda, list):
        return _error(400, "bad_request", 'send JSON {"records": [...], "agenda": [...]}')
    if len(batch) > MAX_RECORDS or len(agenda) > MAX_RECORDS:
        return _error(413, "too_many", f"at most {MAX_RECORDS} records per request")
    results = hub().receive_records(g.kit, batch)
    counts: dict[str, int] = {}
    for result in results:
        counts[result["status"]] = counts.get(result["status"], 0) + 1
    answer: dict[str, Any] = {"results": results, **counts}
    if agenda:
        answer["agenda_changed"] = hub().receive_agenda(agenda)
    return jsonify(answer)


@bp.get("/changes")
def changes() -> Response:
    try:
        limit = int(request.args.get("limit", "500"))
    except ValueError:
        return _error(400, "bad_limit", "limit must be an integer from 1 to 1000")
    if not 1 <= limit <= 1000:
        return _error(400, "bad_limit", "limit must be an integer from 1 to 1000")
    since = request.args.get("since") or None
    if since is not None and not CURSOR.fullmatch(since):
        # A kit sends back what the hub gave it; anything else is not "from the start"
        return _error(400, "bad_cursor", "since must be a cursor this hub gave, "
                      "<generation>-<number>, or left out for everything")
    return jsonify(hub().changes(g.kit, since, limit))
