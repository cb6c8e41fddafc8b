"""Paired kits: one-time pairing codes and per-kit tokens (no Flask here).

`acopio hub pair` issues a code (12 digits, printed as `4821-7730-1945`); a kit redeems it
once with its name (`POST /sync/pair`) and gets a token: 32 random bytes, URL-safe base64.
The hub keeps only hashes, in files readable by the hub's user only (mode 0600):

- `state/hub/pairing.json`: the scrypt hash of each code not yet used, with its expiry. A
  code has about 40 bits, which plain SHA-256 would give away from a leaked file; scrypt
  (the password hash of appliance.accounts) does not. A code works once, and not after
  `hub.pair_code_minutes`.
- `state/hub/kits.json`: per kit its name, the SHA-256 (hex) of its token, when it was
  paired and whether it is revoked. The token is 256 random bits, so a fast hash is enough
  (nothing to guess from it) and checking a request costs one SHA-256, not a 50 ms scrypt.

Pairing again under a kit's name (a kit that lost its credentials, with a new code from the
hub's operator) replaces its token, and un-revokes it; the old token stops working.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB

from appliance import storage
from appliance.accounts import SECRET_MODE, check_secret, hash_secret

CODE_DIGITS = 12
MAX_PENDING_CODES = 20  # redeeming checks each live code's scrypt hash
# The same as a clock node name (sync.hlc): a kit's name in `kits` is its node in stamps.
_KIT_NAME = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_MAX_TOKEN = 256
_KIT_ID = re.compile(r"[0-9a-f]{32}")


class PairingError(ValueError):
    """A refused pairing (wrong, used or expired code; bad kit name)."""


class NameTaken(PairingError):
    """Another kit is paired under this name (the code is left unused)."""


def check_kit_name(name: Any) -> str:
    if not isinstance(name, str) or not _KIT_NAME.fullmatch(name):
        raise PairingError(
            f"invalid kit name {name!r}: use 1 to 63 lower-case letters, digits or '-', "
            "starting with a letter or digit")
    return name


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8", "surrogatepass")).hexdigest()


def iso_utc(ts: float) -> str:
    """A POSIX time as ISO 8601 in UTC, to the second (kits.json, contact.json)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Kit:
    name: str
    paired_at: str
    revoked: bool = False
    revoked_at: str | None = None

    def to_public(self) -> dict[str, Any]:
        return {"kit": self.name, "paired_at": self.paired_at, "revoked": self.revoked,
                "revoked_at": self.revoked_at}


class Kits:
    def __init__(self, hub_state: Path, *, code_minutes: float = 60.0,
                 clock: Callable[[], float] = time.time) -> None:
        self.root = hub_state
        self.kits_path = hub_state / "kits.json"
        self.pairing_path = hub_state / "pairing.json"
        self.tmp_dir = hub_state / "tmp"
        self.code_s = code_minutes * 60
        self.clock = clock
        # token hash -> (kits.json identity, kit name): one stat per request, not one parse
        self._cache: tuple[tuple[int, int, int], dict[str, str]] | None = None

    @contextlib.contextmanager
    def _write(self, path: Path) -> Iterator[TinyDB]:
        with storage.transaction(path, self.tmp_dir, mode=SECRET_MODE) as db:
            yield db

    # -- codes ---------------------------------------------------------------------------

    def issue_code(self) -> tuple[str, str]:
        """A new one-time code and its expiry (ISO 8601, UTC)."""
        now = self.clock()
        digits = f"{secrets.randbelow(10**CODE_DIGITS):0{CODE_DIGITS}d}"
        expires = now + self.code_s
        with self._write(self.pairing_path) as db:
            codes = db.table("codes")
            codes.remove(Query().expires < now)
            live = sorted(codes.all(), key=lambda c: c["expires"])
            for old in live[: max(0, len(live) - MAX_PENDING_CODES + 1)]:
                codes.remove(doc_ids=[old.doc_id])  # the oldest codes stop working
            codes.insert({"hash": hash_secret(digits.encode()), "issued_at": iso_utc(now),
                          "expires": expires, "expires_at": iso_utc(expires)})
        return "-".join(digits[i:i + 4] for i in range(0, CODE_DIGITS, 4)), iso_utc(expires)

    def redeem(self, code: Any, kit_name: Any, kit_id: Any) -> str:
        """Pair `kit_name` with a code: returns the kit's new token (shown once).

        `kit_id` is the kit's own random identity (state/sync/kit_id). A kit paired again
        under its name (reinstalled, or after `acopio sync pair` to this hub once more)
        takes its place; another kit asking for a name that is taken is refused with
        NameTaken, and the code stays usable: two kits with one name would be one clock
        node and could read and change each other's items. A revoked kit's name is free."""
        name = check_kit_name(kit_name)
        if not (isinstance(kit_id, str) and _KIT_ID.fullmatch(kit_id)):
            # Without it a name could be taken over by anyone holding a code.
            raise PairingError(f"invalid kit name {kit_name!r}: its identity (kit_id) is "
                               f"{'missing' if kit_id is None else 'malformed'}")
        digits = re.sub(r"[\s-]", "", code) if isinstance(code, str) else ""
        if len(digits) != CODE_DIGITS or not digits.isascii() or not digits.isdigit():
            raise PairingError("wrong pairing code")
        now = self.clock()
        with self._write(self.pairing_path) as db:
            codes = db.table("codes")
            found = None
            for doc in codes.all():
                if doc.get("expires", 0) < now:
                    continue
                if check_secret(digits[:_MAX_TOKEN].encode(), doc.get("hash", ""),
                                self.pairing_path):
                    found = doc
                    break
            codes.remove(Query().expires < now)
            if found is None:
                raise PairingError("wrong, used or expired pairing code")
            with self._write(self.kits_path) as kits:
                table = kits.table("kits")
                current = table.get(Query().name == name)
                if current is not None and not current.get("revoked") and \
                        current.get("kit_id") != kit_id:
                    raise NameTaken(
                        f"another kit is already paired with this hub as {name!r}: give this "
                        "kit another name (kit.name in its settings) and pair it again with "
                        f"the same code, or, if it replaces that kit, run `acopio hub revoke "
                        f"{name}` on the hub first")
                codes.remove(doc_ids=[found.doc_id])  # one use
                token = secrets.token_urlsafe(32)
                table.remove(Query().name == name)
                table.insert({"name": name, "token_sha256": token_hash(token),
                              "paired_at": iso_utc(now), "revoked": False, "revoked_at": None,
                              "kit_id": kit_id})
        return token

    # -- kits ----------------------------------------------------------------------------

    def list(self) -> list[Kit]:
        db = storage.snapshot(self.kits_path)
        return sorted((Kit(r["name"], r["paired_at"], r.get("revoked", False),
                           r.get("revoked_at")) for r in db.table("kits").all()),
                      key=lambda k: k.name)

    def get(self, name: str) -> Kit | None:
        return next((k for k in self.list() if k.name == name), None)

    def revoke(self, name: str) -> Kit:
        with self._write(self.kits_path) as db:
            table = db.table("kits")
            row = table.get(Query().name == name)
            if row is None:
                raise PairingError(f"no kit {name!r} is paired with this hub")
            table.update({"revoked": True, "revoked_at": iso_utc(self.clock())},
                         doc_ids=[row.doc_id])
        kit = self.get(name)
        assert kit is not None
        return kit

    def authenticate(self, token: str | None) -> str | None:
        """The name of the kit holding `token`, or None (unknown, revoked, malformed)."""
        if not token or len(token) > _MAX_TOKEN:
            return None
        wanted = token_hash(token)
        table = self._tokens()
        found = None
        for stored, name in table.items():  # constant time per entry
            if hmac.compare_digest(stored, wanted):
                found = name
        return found

    def _tokens(self) -> dict[str, str]:
        try:
            st = self.kits_path.stat()
            identity = (st.st_ino, st.st_mtime_ns, st.st_size)
        except FileNotFoundError:
            return {}
        cached = self._cache
        if cached is not None and cached[0] == identity:
            return cached[1]
        db = storage.snapshot(self.kits_path)
        table = {r["token_sha256"]: r["name"] for r in db.table("kits").all()
                 if not r.get("revoked") and isinstance(r.get("token_sha256"), str)}
        self._cache = (identity, table)
        return table
