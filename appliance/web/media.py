"""Thumbnails, previews, proxies and originals, addressed by content hash.

A URL names a SHA-256 and one of a fixed set of derivative names, so no path on disk is ever
built from what the client sent (design decision 9). Derivatives are keyed by content, so
the browser may keep them for a year without asking again (`immutable`); `private`, since
every one of them needs a login. Video and audio proxies answer Range requests, so a phone
can seek without downloading the whole file.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, abort, send_file

from appliance.web.context import web
from appliance.web.present import check_sha256, download_name
from appliance.web.security import requires
from ingest.derive import plan

bp = Blueprint("media", __name__)

IMMUTABLE = "private, max-age=31536000, immutable"
NAMES = {  # public name -> derivative names it may be, by kind
    "thumb": ("thumb",), "preview": ("preview",), "poster": ("poster",),
    "waveform": ("waveform",), "proxy": ("video_proxy", "audio_proxy"),
}


@bp.get("/media/<sha256>/<name>")
@requires("view")
def derivative(sha256: str, name: str) -> Response:
    check_sha256(sha256)
    if name not in NAMES:
        abort(404)
    for candidate in NAMES[name]:
        path = plan.path(web().data, sha256, candidate)
        if path.is_file():
            response = send_file(path, conditional=True, etag=True, max_age=None)
            response.headers["Cache-Control"] = IMMUTABLE
            return response
    abort(404)


@bp.get("/original/<sha256>")
@requires("download")
def original(sha256: str) -> Response:
    check_sha256(sha256)
    record = web().index.get(sha256)
    if record is None:
        abort(404)
    archive = web().data.archive.resolve()
    path = (web().data.root / record["archive_path"]).resolve()
    # The catalog wrote the path, but a damaged or hand-edited shard must still not lead
    # out of the archive.
    if not path.is_relative_to(archive) or not Path(path).is_file():
        abort(404)
    response = send_file(path, as_attachment=True,
                         download_name=download_name(record["original_name"]),
                         conditional=True, etag=True, max_age=None)
    response.headers["Cache-Control"] = IMMUTABLE
    return response
