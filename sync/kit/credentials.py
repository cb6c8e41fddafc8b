"""The kit's pairing with a hub: `state/sync/credentials.json`, mode 0600.

Written once by `acopio sync pair URL CODE` (the hub's answer to `POST /sync/pair`): the hub's
URL, the kit's name as the hub knows it, and the bearer token. The hub keeps only a hash of
the token, so this file is the one copy; it is readable by the kit's own user alone.

`state/sync/kit_id` holds the kit's own identity, 128 random bits made at its first pairing
and sent with every pairing after: the hub lets a kit take its own name again (reinstalled,
paired once more) but refuses it to another kit, however its `kit.name` reads. With a
pairing code, it is what lets a kit take a paired name, so it is 0600 too.
"""

from __future__ import annotations

import re
import secrets
from dataclasses import asdict, dataclass
from pathlib import Path

from appliance import storage
from appliance.config import hub_url_problem
from appliance.datadir import DataDir
from appliance.fsutil import atomic_write
from appliance.storage import dump_json
from sync.kit.store import sync_dir


class NotPaired(RuntimeError):
    """This kit has no credentials for a hub yet."""


@dataclass(frozen=True)
class Credentials:
    hub_url: str
    kit: str
    token: str
    paired_at: str = ""
    hub: str = ""  # the hub's own name, as it answered the pairing


def path_of(data: DataDir) -> Path:
    return sync_dir(data) / "credentials.json"


def normalize_url(url: str) -> str:
    """`http(s)://host[:port][/prefix]` without a trailing slash; anything else raises."""
    url = url.strip()
    problem = hub_url_problem(url)
    if problem:
        raise ValueError(f"not a hub URL ({problem}): {url!r}")
    return url.rstrip("/")


def load(data: DataDir) -> Credentials | None:
    raw = storage.read_json_file(path_of(data))
    if raw is None:
        return None
    try:
        return Credentials(hub_url=str(raw["hub_url"]), kit=str(raw["kit"]),
                           token=str(raw["token"]), paired_at=str(raw.get("paired_at", "")),
                           hub=str(raw.get("hub", "")))
    except KeyError as exc:
        raise storage.CorruptStateError(path_of(data), f"missing {exc}") from None


def save(data: DataDir, credentials: Credentials) -> None:
    path = path_of(data)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, dump_json(asdict(credentials)), data.tmp, mode=0o600)


_KIT_ID = re.compile(r"[0-9a-f]{32}")


def kit_id(data: DataDir) -> str:
    """This kit's identity (made, durably, the first time it is asked for)."""
    path = sync_dir(data) / "kit_id"
    try:
        found = path.read_text().strip()
    except FileNotFoundError:
        found = ""
    if _KIT_ID.fullmatch(found):
        if path.stat().st_mode & 0o077:
            path.chmod(0o600)  # made 0644 by a kit before this rule
        return found
    made = secrets.token_hex(16)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, (made + "\n").encode(), data.tmp, mode=0o600)
    return made
