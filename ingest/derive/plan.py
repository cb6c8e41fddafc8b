"""Which derivatives an item gets, where they live, and in what order they are made.

Derivatives live apart from the originals, keyed by content hash (design decision 1):
`derivatives/<ab>/<sha256>/<name>.<ext>`. Deleting the whole tree loses nothing: every file
is made again from the archive by the worker.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from datetime import datetime
from pathlib import Path
from typing import Any

from appliance.datadir import DataDir
from appliance.jobs import JobQueue, JobRequest

# name -> (file name, job priority: lower runs first). Thumbnails first, transcodes last.
DERIVATIVES: dict[str, tuple[str, int]] = {
    "thumb": ("thumb.jpg", 10),
    "preview": ("preview.jpg", 20),
    "poster": ("poster.jpg", 30),
    "waveform": ("waveform.png", 40),
    "audio_proxy": ("proxy.m4a", 40),
    "video_proxy": ("proxy.mp4", 50),
}
BY_KIND: dict[str, tuple[str, ...]] = {
    "photo": ("thumb", "preview"),
    "raw": ("thumb", "preview"),
    "video": ("poster", "video_proxy"),
    "audio": ("audio_proxy", "waveform"),
}
# What `acopio items --json` calls them: both proxies are "proxy".
PUBLIC_NAME = {"audio_proxy": "proxy", "video_proxy": "proxy"}


def folder(data: DataDir, sha256: str) -> Path:
    return data.derivatives / sha256[:2] / sha256


def path(data: DataDir, sha256: str, name: str) -> Path:
    return folder(data, sha256) / DERIVATIVES[name][0]


def existing(data: DataDir, item: dict[str, Any]) -> dict[str, str]:
    """The item's derivatives that exist, as {public name: path relative to the data dir}.

    Plain strings and one stat each: a grid page asks this for 60 items per request, and
    pathlib objects made it a third of the page's time (`./scripts/bench web`)."""
    sha = item["sha256"]
    rel_folder = f"derivatives/{sha[:2]}/{sha}/"
    root = f"{data.root}/"
    found = {}
    for name in BY_KIND.get(item.get("kind", ""), ()):
        rel = rel_folder + DERIVATIVES[name][0]
        if os.path.isfile(root + rel):
            found[PUBLIC_NAME.get(name, name)] = rel
    return found


# Problems that leave an item without a picture of its own (its thumbnail and preview are
# placeholders, or its derivatives were given up on): the kiosk and the printed mural, shown
# to the public, leave such an item out.
NO_PICTURE = frozenset({"damaged", "too_large", "no_preview"})


def has_no_picture(record: Mapping[str, Any]) -> bool:
    problems = record.get("problems")
    return isinstance(problems, list) and any(
        isinstance(p, Mapping) and p.get("code") in NO_PICTURE for p in problems)


def requests_for(items: list[dict[str, Any]]) -> list[JobRequest]:
    """Jobs for new items; newest capture time first within each priority."""
    out = []
    for item in items:
        try:
            order = datetime.fromisoformat(item["captured_at"]).timestamp()
        except (KeyError, TypeError, ValueError):  # no capture time: queued last
            order = None
        kind = item.get("kind")
        for name in BY_KIND.get(kind if isinstance(kind, str) else "", ()):
            out.append(JobRequest(kind=name, item=item["sha256"],
                                  priority=DERIVATIVES[name][1], order=order))
    return out


def enqueue(data: DataDir, items: list[dict[str, Any]]) -> None:
    requests = requests_for(items)
    if requests:
        JobQueue(data).enqueue_many(requests)
