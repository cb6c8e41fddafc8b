"""Catalog records as the UI and the API show them: the `acopio items --json` fields plus
the URLs of the item's page, derivatives and original."""

from __future__ import annotations

import re
from typing import Any

from flask import abort, url_for

from appliance.editorial import history_of, public
from appliance.web.context import web
from ingest.derive import plan
from sync.kit.evict import is_evicted

SHA256 = re.compile(r"^[0-9a-f]{64}$")
MONTH = re.compile(r"^\d{4}-(0[1-9]|1[0-2])$")


def check_sha256(value: str) -> str:
    if not SHA256.match(value):
        abort(404)
    return value


def check_month(value: str) -> str:
    if not MONTH.match(value):
        abort(404)
    return value


def item(record: dict[str, Any], *, history: bool = False) -> dict[str, Any]:
    """`history` (every change, who and when) only for one item's page, not in lists."""
    out = public(record)
    if history:
        out["history"] = history_of(record)
    derivatives = plan.existing(web().data, record)
    out["derivatives"] = derivatives
    sha = record["sha256"]
    # Original removed from the kit for space; the hub holds it ("en la central").
    out["evicted"] = is_evicted(web().data, sha)
    urls = {"page": url_for("browse.item", sha256=sha),
            "original": url_for("media.original", sha256=sha)}
    for name in derivatives:
        urls[name] = url_for("media.derivative", sha256=sha, name=name)
    out["urls"] = urls
    return out


def items(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [item(r) for r in records]


def grid_image(entry: dict[str, Any]) -> str | None:
    """The picture a grid cell shows: thumbnail, else a video's poster, else an audio
    waveform; None while the worker has not made it yet."""
    urls = entry["urls"]
    return urls.get("thumb") or urls.get("poster") or urls.get("waveform")


def displayable(text: str) -> str:
    """`text` that a page can carry: a name read from a card that is not UTF-8 (an old
    camera, a Windows share) is kept in the catalog with surrogate escapes, which cannot be
    encoded into a page. Each escaped byte is shown as the Windows-1252 character it most
    likely was ("Fotografía" from Latin-1), or U+FFFD."""
    if not any(0xDC80 <= ord(c) <= 0xDCFF for c in text):
        return text
    return "".join(bytes([ord(c) - 0xDC00]).decode("cp1252", "replace")
                   if 0xDC80 <= ord(c) <= 0xDCFF else c for c in text)


def download_name(name: str) -> str:
    """A file name a browser can take: invalid UTF-8 (kept as surrogate escapes in the
    catalog), path separators and control characters become "_". Quotes stay: the header
    is written quoted and escaped (werkzeug), and the name is kept as it was."""
    cleaned = "".join("_" if c in "/\\" or ord(c) < 32 or 0xDC80 <= ord(c) <= 0xDCFF
                      else c for c in name)
    return cleaned or "acopio"
