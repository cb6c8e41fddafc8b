"""Accounts for the LAN web UI: users and roles, sessions, the first-start setup code, and
login throttling (design decision 9).

The kit sits on an open event LAN, so nothing here trusts the network or the state files:
there is no default password (a one-time setup code creates the director), passwords are kept
only as scrypt hashes, and sessions.json stores hashes of session ids, so a leaked state file
or backup lets nobody in. Users and sessions live in small TinyDB state files written under
the same lock + durable-rename discipline as the rest of the state (appliance/storage.py).

This module knows nothing about HTTP: the web layer and the CLI both sit on top of it.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import re
import secrets
import threading
import time
import unicodedata
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import Query, TinyDB

from appliance import boxclock, storage
from appliance.fsutil import atomic_write, file_lock, fsync_dir

ROLES = ("director", "photographer", "social", "designer", "assistant")
_ALL = frozenset(ROLES)
PERMISSIONS: dict[str, frozenset[str]] = {
    # browse, search, status, thumbnails, previews
    "view": _ALL,
    # original files
    "download": _ALL,
    # start or stop a microphone or webcam recording
    "record": frozenset({"director", "photographer", "social", "assistant"}),
    "manage_agenda": frozenset({"director", "assistant"}),
    # captions, credits, keywords
    "edit_items": frozenset({"director", "photographer", "social", "assistant"}),
    "approve": frozenset({"director"}),
    "manage_users": frozenset({"director"}),
    # the kiosk screen's settings: period, areas, interval, layout, colours, logo, ticker
    "manage_kiosk": frozenset({"director"}),
    # make the printed mural (rendering it takes the box's CPU for a while)
    "print_mural": frozenset({"director", "designer"}),
}
LANGUAGES = ("es-MX", "en", "")  # "" follows the kit's default language

SECRET_MODE = 0o600  # users, sessions and the setup code: readable by the service only
MIN_PASSWORD = 10
MAX_PASSWORD = 1024
_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{1,31}")

# scrypt cost for new hashes: about 50 ms and 16 MiB per hash on the box. Stored hashes carry
# their own parameters, so raising these later keeps old passwords working.
SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN, SALT_BYTES = 2**14, 8, 1, 32, 16

TOUCH_INTERVAL_S = 60.0  # a session's last_seen is written at most this often
_CLOCK_SLACK_S = 300.0  # a session created further "in the future" means the clock went back
_MAX_TOKEN = 256  # longer session ids or setup codes are garbage; refuse before hashing


class AccountError(ValueError):
    """A refused account operation; the message names the problem, in English (the CLI and
    the JSON API show it). `code` names the problem for good, with the `values` its message
    needs, so that the web pages can say it in the screen's language
    (web/i18n.py `account.error.<code>`)."""

    def __init__(self, message: str, code: str = "", **values: Any) -> None:
        super().__init__(message)
        self.code = code
        self.values = values


def allowed(role: str, permission: str) -> bool:
    """Whether `role` may do `permission`. An unknown permission raises KeyError: a typo in
    the web layer must fail loudly, not silently allow or deny."""
    return role in PERMISSIONS[permission]


# -- password hashing -----------------------------------------------------------------


def _password_bytes(password: str) -> bytes:
    # NFC: "ñ" typed on one keyboard as one code point and on another as n + combining tilde
    # is the same password. surrogatepass: a password read from a terminal with undecodable
    # bytes still hashes instead of crashing.
    return unicodedata.normalize("NFC", password).encode("utf-8", "surrogatepass")


# One scrypt at a time per process: each takes 16 MiB and ~50 ms of CPU (more on a Pi), so a
# burst of logins (or a flood of guesses) costs one block of memory, not one per web thread.
_SCRYPT_SLOT = threading.BoundedSemaphore(1)


def _scrypt(secret: bytes, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # OpenSSL's default memory cap (32 MiB) would refuse raised parameters; allow what they
    # need (V is 128*r*n bytes, B is 128*r*p) plus headroom, within the API's int limit.
    maxmem = min(128 * r * (n + p + 2) + 2**20, 2**31 - 1)
    with _SCRYPT_SLOT:
        return hashlib.scrypt(secret, salt=salt, n=n, r=r, p=p, dklen=dklen, maxmem=maxmem)


def hash_secret(secret: bytes) -> str:
    """`scrypt$N$r$p$<salt b64>$<hash b64>` with a fresh random salt."""
    salt = secrets.token_bytes(SALT_BYTES)
    digest = _scrypt(secret, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)
    return (f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}$"
            f"{base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}")


def check_secret(secret: bytes, stored: str, path: Path) -> bool:
    """Whether `secret` matches `stored` (compared in constant time). A stored hash that does
    not parse is damage in the state file at `path`, raised, never taken as "no match"."""
    parts = stored.split("$") if isinstance(stored, str) else []
    try:
        if len(parts) != 6 or parts[0] != "scrypt":
            raise ValueError("not an scrypt hash")
        n, r, p = int(parts[1]), int(parts[2]), int(parts[3])
        salt = base64.b64decode(parts[4], validate=True)
        expected = base64.b64decode(parts[5], validate=True)
        if n < 2 or n & (n - 1) or r < 1 or p < 1 or not salt or not expected:
            raise ValueError("bad scrypt parameters")
    except ValueError:
        raise storage.CorruptStateError(path, "holds a malformed password hash") from None
    return hmac.compare_digest(_scrypt(secret, salt, n, r, p, len(expected)), expected)


def _burn_hash(secret: bytes) -> None:
    """Spend what a real check costs, so a reply's timing does not tell who exists."""
    _scrypt(secret, bytes(SALT_BYTES), SCRYPT_N, SCRYPT_R, SCRYPT_P, SCRYPT_DKLEN)


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        if isinstance(name, str) and _NAME.fullmatch(name.lower()):
            raise AccountError(
                f"user names are lower case: use {name.lower()!r} instead of {name!r}",
                "name_case", name=name, suggested=name.lower())
        raise AccountError(
            f"invalid user name {name!r}: use 2 to 32 lower-case letters, digits, '.', '_' "
            "or '-', starting with a letter or digit", "name_invalid",
            name=name if isinstance(name, str) else "")
    return name


def check_role(role: str) -> str:
    if role not in ROLES:
        raise AccountError(f"unknown role {role!r}: use one of {', '.join(ROLES)}",
                           "role_unknown", role=str(role))
    return role


def check_password(password: str) -> str:
    if not isinstance(password, str):
        raise AccountError("the password must be text", "password_type")
    length = len(unicodedata.normalize("NFC", password))
    if length < MIN_PASSWORD:
        raise AccountError(f"the password is too short: use at least {MIN_PASSWORD} characters",
                           "password_short", min=MIN_PASSWORD)
    if length > MAX_PASSWORD:
        raise AccountError(f"the password is too long: use at most {MAX_PASSWORD} characters",
                           "password_long", max=MAX_PASSWORD)
    if len(set(password)) == 1:
        raise AccountError("the password is one character repeated: choose a real password",
                           "password_repeated")
    return password


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


# -- users ----------------------------------------------------------------------------


@dataclass(frozen=True)
class User:
    name: str
    role: str
    created_at: str  # ISO 8601, UTC
    # Changes whenever the password changes or the user is disabled: sessions remember the
    # epoch they were made under, so one bump ends them all. Values come from a counter kept
    # in users.json (never reused), so a removed user's sessions never fit a new user of the
    # same name.
    epoch: int
    disabled: bool = False
    language: str = ""  # UI language; "" follows the kit's default

    def to_public(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "created_at": self.created_at,
                "disabled": self.disabled, "language": self.language}

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> User:
        return cls(name=record["name"], role=record["role"], created_at=record["created_at"],
                   epoch=record["epoch"], disabled=record.get("disabled", False),
                   language=record.get("language", ""))


class Users:
    """The accounts, in state/users.json. Reads take no lock (renames are atomic); every
    change is one locked read-modify-write, so the CLI and the web never lose each other's."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "users.json"
        self.tmp_dir = state_dir / "tmp"

    @contextlib.contextmanager
    def _write(self) -> Iterator[TinyDB]:
        with storage.transaction(self.path, self.tmp_dir, mode=SECRET_MODE) as db:
            yield db

    def _records(self) -> list[dict[str, Any]]:
        return list(storage.snapshot(self.path).table("users").all())

    def count(self) -> int:
        return len(self._records())

    def list(self) -> list[User]:
        return sorted((User.from_record(r) for r in self._records()), key=lambda u: u.name)

    def get(self, name: str) -> User | None:
        record = next((r for r in self._records() if r["name"] == name), None)
        return User.from_record(record) if record else None

    def add(self, name: str, role: str, password: str) -> User:
        check_name(name)
        check_role(role)
        check_password(password)
        hashed = hash_secret(_password_bytes(password))  # outside the lock: it takes 50 ms
        with self._write() as db:
            table = db.table("users")
            if table.contains(Query().name == name):
                raise AccountError(f"a user {name!r} already exists", "user_exists", name=name)
            user = User(name=name, role=role, created_at=_now_iso(), epoch=_next_epoch(db))
            table.insert({**user.to_public(), "epoch": user.epoch, "password": hashed})
        return user

    def verify(self, name: str, password: str) -> User | None:
        """The user when `password` is theirs and they are enabled, else None. Unknown names
        cost one scrypt too, so timing does not reveal which names exist."""
        secret = _password_bytes(password) if isinstance(password, str) else b""
        record = next((r for r in self._records() if r["name"] == name), None)
        if record is None:
            _burn_hash(secret)
            return None
        ok = check_secret(secret, record["password"], self.path)
        user = User.from_record(record)
        return user if ok and not user.disabled else None

    def set_password(self, name: str, current: str | None, new: str) -> User:
        """Change a password and end the user's sessions. `current` is checked unless None
        (an administrator's reset from the box's console)."""
        check_password(new)
        hashed = hash_secret(_password_bytes(new))
        with self._write() as db:
            record = _find(db, name)
            if current is not None and not check_secret(
                    _password_bytes(current), record["password"], self.path):
                raise AccountError("the current password is wrong", "current_password_wrong")
            return _update(db, name, password=hashed, epoch=_next_epoch(db))

    def set_role(self, name: str, role: str) -> User:
        """Change a role. Sessions stay: the web layer reads the role on every request."""
        check_role(role)
        with self._write() as db:
            if role != "director":
                _keep_a_director(db, name, "demote")
            return _update(db, name, role=role)

    def set_disabled(self, name: str, disabled: bool) -> User:
        with self._write() as db:
            record = _find(db, name)
            if disabled:
                _keep_a_director(db, name, "disable")
            if bool(record.get("disabled", False)) == disabled:
                return User.from_record(record)
            return _update(db, name, disabled=disabled, epoch=_next_epoch(db))

    def set_language(self, name: str, language: str) -> User:
        if language not in LANGUAGES:
            raise AccountError(
                f"unknown language {language!r}: use one of {', '.join(LANGUAGES[:-1])} "
                "or '' for the kit's default", "language_unknown", language=str(language))
        with self._write() as db:
            return _update(db, name, language=language)

    def remove(self, name: str) -> None:
        with self._write() as db:
            _find(db, name)
            _keep_a_director(db, name, "remove")
            db.table("users").remove(Query().name == name)


def _find(db: TinyDB, name: str) -> dict[str, Any]:
    record = db.table("users").get(Query().name == name)
    if record is None:
        raise AccountError(f"no user {name!r}", "user_missing", name=name)
    return dict(record)


def _update(db: TinyDB, name: str, **fields: Any) -> User:
    _find(db, name)
    db.table("users").update(fields, Query().name == name)
    return User.from_record(_find(db, name))


def _keep_a_director(db: TinyDB, name: str, action: str) -> None:
    """Refuse to leave the kit with no enabled director: nobody could manage users again
    except from the box's console."""
    directors = [r["name"] for r in db.table("users").all()
                 if r["role"] == "director" and not r.get("disabled", False)]
    if directors == [name]:
        raise AccountError(
            f"cannot {action} {name!r}: it is the last enabled director; make another "
            "director first", f"last_director_{action}", name=name)


def _next_epoch(db: TinyDB) -> int:
    """The next value of the file-wide epoch counter. It starts at a random point, so a kit
    whose users.json was deleted does not hand old epochs out again."""
    meta = db.table("meta")
    row = meta.get(doc_id=1)
    value = (row["epoch_seq"] if row else secrets.randbelow(2**31)) + 1
    meta.truncate()
    meta.insert({"epoch_seq": value})
    return value


# -- sessions -------------------------------------------------------------------------


@dataclass(frozen=True)
class Session:
    id: str  # the cookie value; only its SHA-256 is stored
    user: str
    csrf: str
    created_at: float  # clock() seconds
    last_seen: float
    epoch: int  # the user's epoch at login
    # The same two moments on the boot's own clock (ticks), which NTP never steps, and the
    # boot they belong to: within it, they measure idle time and age; across a reboot,
    # the wall times do.
    boot: str | None = None
    created_tick: float | None = None
    seen_tick: float | None = None


def boot_ticks() -> float:
    """Seconds since boot, suspend included (CLOCK_BOOTTIME): never stepped by NTP."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


def _session_key(session_id: str) -> str:
    return hashlib.sha256(session_id.encode("utf-8", "surrogatepass")).hexdigest()


class Sessions:
    """Logged-in browsers, in state/sessions.json, keyed by SHA-256 of the session id.

    A session ends when idle for `idle_s`, `max_s` after login, when its user is removed or
    disabled, or when the user's epoch moves (password change). `get` is on every request's
    path, so it reads without a lock and writes last_seen at most once a minute.
    """

    def __init__(self, state_dir: Path, users: Users, *, idle_s: float, max_s: float,
                 clock: Callable[[], float] = time.time,
                 ticks: Callable[[], float] = boot_ticks,
                 boot: Callable[[], str | None] = boxclock.boot_id) -> None:
        """`clock`: wall time, kept across reboots; `ticks` and `boot`: the boot's own
        clock, so that NTP stepping the wall clock (a Pi booted days behind) logs nobody
        out mid-event."""
        self.path = state_dir / "sessions.json"
        self.tmp_dir = state_dir / "tmp"
        self.users = users
        self.idle_s = idle_s
        self.max_s = max_s
        self.clock = clock
        self.ticks = ticks
        self.boot = boot

    def _now(self) -> tuple[float, float, str | None]:
        return self.clock(), self.ticks(), self.boot()

    def create(self, user: User) -> Session:
        now = self._now()
        wall, tick, boot = now
        session = Session(id=secrets.token_urlsafe(32), user=user.name,
                          csrf=secrets.token_urlsafe(32), created_at=wall, last_seen=wall,
                          epoch=user.epoch, boot=boot, created_tick=tick, seen_tick=tick)
        with storage.transaction(self.path, self.tmp_dir, mode=SECRET_MODE) as db:
            self._prune(db, now)  # a write is due anyway; keeps the file from growing
            db.table("sessions").insert({
                "key": _session_key(session.id), "user": session.user, "csrf": session.csrf,
                "created_at": wall, "last_seen": wall, "epoch": session.epoch,
                "boot": boot, "created_tick": tick, "seen_tick": tick,
            })
        return session

    def get(self, session_id: str) -> Session | None:
        if not isinstance(session_id, str) or not session_id or len(session_id) > _MAX_TOKEN:
            return None
        key = _session_key(session_id)
        record = storage.snapshot(self.path).table("sessions").get(Query().key == key)
        if record is None:
            return None
        now = self._now()
        session = replace(_from_record(record), id=session_id)
        if not self._valid(session, now, self.users.get(session.user)):
            return None
        idle, _ = _elapsed(session, now)
        if idle >= TOUCH_INTERVAL_S:
            wall, tick, boot = now
            touched = {"last_seen": wall, "boot": boot, "seen_tick": tick}
            if session.boot != boot:  # its first request in this boot
                touched["created_tick"] = None
            with storage.transaction(self.path, self.tmp_dir, mode=SECRET_MODE) as db:
                table = db.table("sessions")
                if not table.contains(Query().key == key):
                    return None  # ended meanwhile (logout elsewhere)
                table.update(touched, Query().key == key)
            session = replace(session, **touched)
        return session

    def end(self, session_id: str) -> None:
        if not isinstance(session_id, str) or not session_id:
            return
        key = _session_key(session_id)
        with storage.transaction(self.path, self.tmp_dir, mode=SECRET_MODE) as db:
            db.table("sessions").remove(Query().key == key)

    def end_all(self, user_name: str, except_id: str | None = None) -> int:
        """End every session of a user (but `except_id`, the one asking); how many ended."""
        keep = _session_key(except_id) if except_id else None
        with storage.transaction(self.path, self.tmp_dir, mode=SECRET_MODE) as db:
            removed = db.table("sessions").remove(
                (Query().user == user_name) & (Query().key != keep))
        return len(removed)

    def prune(self) -> int:
        """Drop sessions that can never be valid again; how many were dropped."""
        with storage.transaction(self.path, self.tmp_dir, mode=SECRET_MODE) as db:
            return self._prune(db, self._now())

    def _prune(self, db: TinyDB, now: tuple[float, float, str | None]) -> int:
        table = db.table("sessions")
        users = {u.name: u for u in self.users.list()}
        dead = [r.doc_id for r in table.all()
                if not self._valid(_from_record(r), now, users.get(r["user"]))]
        if dead:
            table.remove(doc_ids=dead)
        return len(dead)

    def _valid(self, session: Session, now: tuple[float, float, str | None],
               user: User | None) -> bool:
        idle, age = _elapsed(session, now)
        return (
            user is not None and not user.disabled and user.epoch == session.epoch
            and idle <= self.idle_s and age <= self.max_s
            # an age by wall time: a creation "in the future" means the clock went back
            and ((session.boot == now[2] and session.created_tick is not None)
                 or session.created_at <= now[0] + _CLOCK_SLACK_S)
        )


def _elapsed(session: Session, now: tuple[float, float, str | None]) -> tuple[float, float]:
    """(idle time, age) of a session: by the boot's clock for what happened in this boot,
    by wall time for the rest (a session older than the boot)."""
    wall, tick, boot = now
    same_boot = boot is not None and session.boot == boot
    idle = tick - session.seen_tick if same_boot and session.seen_tick is not None \
        else wall - session.last_seen
    age = tick - session.created_tick if same_boot and session.created_tick is not None \
        else wall - session.created_at
    return idle, age


def _from_record(record: dict[str, Any]) -> Session:
    def number(key: str) -> float | None:
        value = record.get(key)
        return float(value) if isinstance(value, int | float) else None

    boot = record.get("boot")
    return Session(id="", user=record["user"], csrf=record["csrf"],
                   created_at=record["created_at"], last_seen=record["last_seen"],
                   epoch=record["epoch"], boot=boot if isinstance(boot, str) else None,
                   created_tick=number("created_tick"), seen_tick=number("seen_tick"))


# -- first-start setup code -----------------------------------------------------------


class SetupCode:
    """No default password: while no user exists, a one-time code printed at start (console
    and journal) lets someone create the director.

    Only the code's scrypt hash is kept (state/setup.json): 12 digits hashed with plain
    SHA-256 would be guessed from a leaked file in minutes.
    """

    DIGITS = 12

    def __init__(self, state_dir: Path, users: Users) -> None:
        self.path = state_dir / "setup.json"
        self.tmp_dir = state_dir / "tmp"
        self.users = users

    def _lock(self) -> contextlib.AbstractContextManager[None]:
        return file_lock(storage.lock_path_for(self.path))

    def issue(self) -> str | None:
        """A new code (the previous one stops working) while no user exists, else None."""
        with self._lock():
            if self.users.count():
                self._discard()
                return None
            digits = f"{secrets.randbelow(10**self.DIGITS):0{self.DIGITS}d}"
            record = {"hash": hash_secret(digits.encode()), "issued_at": _now_iso()}
            atomic_write(self.path, storage.dump_json(record), self.tmp_dir, mode=SECRET_MODE)
        return "-".join(digits[i:i + 4] for i in range(0, self.DIGITS, 4))

    def needed(self) -> bool:
        return self.users.count() == 0

    def redeem(self, code: str, name: str, password: str) -> User:
        """Create the director with the code. Under one lock, so that of two redeems at once
        exactly one creates a director and the other is told the code is used."""
        digits = re.sub(r"[\s-]", "", code) if isinstance(code, str) else ""
        with self._lock():
            record = storage.read_json_file(self.path)
            if record is None or self.users.count():
                raise AccountError("no setup code is pending: the kit already has users; "
                                   "log in instead", "setup_not_pending")
            good = check_secret(digits[:_MAX_TOKEN].encode("utf-8", "surrogatepass"),
                                record.get("hash", ""), self.path)
            if not good or len(digits) != self.DIGITS or not digits.isascii():
                raise AccountError("wrong setup code", "setup_wrong_code")
            user = self.users.add(name, "director", password)
            self._discard()
        return user

    def _discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
            fsync_dir(self.path.parent)


# -- login throttling -----------------------------------------------------------------


class LoginThrottle:
    """In memory (per web process, held by the app, not a module global).

    Counts failed logins per (address, name), and per address across all names so that one
    host cannot try a password against every account. Memory is bounded: only the last
    `limit` failures of a key matter, and past `max_keys` keys the least recently failed are
    forgotten (a flood of names or addresses can unblock an old key early, never grow memory).
    """

    ADDRESS_FACTOR = 4

    def __init__(self, attempts: int, window_s: float,
                 clock: Callable[[], float] = time.monotonic, *, max_keys: int = 10_000) -> None:
        if attempts < 1 or window_s <= 0 or max_keys < 1:
            raise ValueError("attempts, window_s and max_keys must be positive")
        self.attempts = attempts
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self._lock = threading.Lock()
        # insertion order = least recently failed first (a key is moved to the end on failure)
        self._pairs: dict[tuple[str, str], deque[float]] = {}
        self._addresses: dict[str, deque[float]] = {}

    @staticmethod
    def _name_key(name: str) -> str:
        # Case and padding must not buy extra tries; a long junk name must not cost memory.
        return name.strip().lower()[:64]

    def retry_after(self, address: str, name: str) -> float:
        """0 when a login may be tried now, else the seconds to wait."""
        now = self.clock()
        with self._lock:
            return self._retry_after(address, name, now)

    def attempt(self, address: str, name: str) -> float:
        """Check and count in one step: the seconds to wait (nothing counted), or 0 with
        this attempt counted as failed until `succeeded` or `not_a_guess` takes it back.
        A check apart from the count let every request already in flight through: a burst
        of parallel logins tried a dozen passwords against a limit of five."""
        now = self.clock()
        with self._lock:
            wait = self._retry_after(address, name, now)
            if wait == 0:
                self._record(self._pairs, (address, self._name_key(name)), self.attempts, now)
                self._record(self._addresses, address, self.attempts * self.ADDRESS_FACTOR,
                             now)
            return wait

    def failed(self, address: str, name: str) -> None:
        now = self.clock()
        with self._lock:
            self._record(self._pairs, (address, self._name_key(name)), self.attempts, now)
            self._record(self._addresses, address, self.attempts * self.ADDRESS_FACTOR, now)

    def succeeded(self, address: str, name: str) -> None:
        """A right password (after `attempt`): the name's failures are forgotten, and this
        attempt no longer counts against the address."""
        with self._lock:
            self._pairs.pop((address, self._name_key(name)), None)
            self._take_back(self._addresses, address)

    def not_a_guess(self, address: str, name: str) -> None:
        """An `attempt` refused for something other than a wrong secret (a malformed
        request, a name already taken): it does not count."""
        with self._lock:
            self._take_back(self._pairs, (address, self._name_key(name)))
            self._take_back(self._addresses, address)

    def _retry_after(self, address: str, name: str, now: float) -> float:
        pair = self._pairs.get((address, self._name_key(name)))
        return max(self._wait(pair, self.attempts, now),
                   self._wait(self._addresses.get(address),
                              self.attempts * self.ADDRESS_FACTOR, now))

    @staticmethod
    def _take_back(table: dict[Any, deque[float]], key: Any) -> None:
        times = table.get(key)
        if times:
            times.pop()
            if not times:
                del table[key]

    def __len__(self) -> int:
        """Keys held (both tables), for tests and status."""
        with self._lock:
            return len(self._pairs) + len(self._addresses)

    def _wait(self, times: deque[float] | None, limit: int, now: float) -> float:
        if times is None or len(times) < limit:
            return 0.0
        return max(0.0, times[0] + self.window_s - now)

    def _record(self, table: dict[Any, deque[float]], key: Any, limit: int, now: float) -> None:
        times = table.pop(key, None)
        if times is None:
            times = deque(maxlen=limit)
        times.append(now)
        table[key] = times  # moved to the end: most recently failed
        if len(table) > self.max_keys:
            for old in [k for k, t in table.items() if t[-1] <= now - self.window_s]:
                del table[old]
            while len(table) > self.max_keys:
                del table[next(iter(table))]
