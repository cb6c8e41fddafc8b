"""Accounts: roles, password hashing, sessions, the setup code, login throttling, `acopio users`.

Real state files and real processes; time is injected where expiry is tested.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from appliance.accounts import (
    PERMISSIONS,
    ROLES,
    TOUCH_INTERVAL_S,
    AccountError,
    LoginThrottle,
    Sessions,
    SetupCode,
    Users,
    allowed,
)
from appliance.storage import CorruptStateError
from tests.conftest import REPO, run_cli

PASSWORD = "correct horse battery"


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def state(data_dir: Path) -> Path:
    return data_dir / "state"


@pytest.fixture
def users(state: Path) -> Users:
    return Users(state)


# -- roles ----------------------------------------------------------------------------


def test_permission_table() -> None:
    assert set(PERMISSIONS) == {"view", "download", "record", "manage_agenda", "edit_items",
                                "approve", "manage_users", "manage_kiosk", "print_mural"}
    for role in ROLES:
        assert allowed(role, "view") and allowed(role, "download")
        assert allowed(role, "approve") == (role == "director")
        assert allowed(role, "manage_users") == (role == "director")
        assert allowed(role, "manage_kiosk") == (role == "director")
        assert allowed(role, "print_mural") == (role in ("director", "designer"))
        assert allowed(role, "manage_agenda") == (role in ("director", "assistant"))
        assert allowed(role, "record") == (role != "designer")
        assert allowed(role, "edit_items") == (role != "designer")
    assert not allowed("nobody", "view")


def test_unknown_permission_is_an_error_not_a_denial() -> None:
    with pytest.raises(KeyError):
        allowed("director", "aprove")


# -- users ----------------------------------------------------------------------------


def test_add_and_verify(users: Users) -> None:
    user = users.add("ana", "photographer", PASSWORD)
    assert (user.name, user.role, user.disabled, user.language) == ("ana", "photographer",
                                                                    False, "")
    assert user.created_at.endswith("+00:00")
    assert users.verify("ana", PASSWORD) == user
    assert users.verify("ana", PASSWORD + "x") is None
    assert users.verify("nadie", PASSWORD) is None
    assert users.count() == 1 and users.get("ana") == user and users.get("nadie") is None
    assert user.to_public() == {"name": "ana", "role": "photographer",
                                "created_at": user.created_at, "disabled": False,
                                "language": ""}


def test_list_is_sorted_by_name(users: Users) -> None:
    for name in ("zoe", "ana", "luis"):
        users.add(name, "social", PASSWORD)
    assert [u.name for u in users.list()] == ["ana", "luis", "zoe"]


def test_disabled_user_cannot_log_in(users: Users) -> None:
    users.add("jefa", "director", PASSWORD)
    users.add("ana", "assistant", PASSWORD)
    before = users.get("ana")
    assert before is not None
    disabled = users.set_disabled("ana", True)
    assert disabled.disabled and disabled.epoch != before.epoch
    assert users.verify("ana", PASSWORD) is None
    assert not users.set_disabled("ana", False).disabled
    assert users.verify("ana", PASSWORD) is not None


def test_unicode_password_is_normalised(users: Users) -> None:
    users.add("ana", "social", "contrase\u00f1a segura")  # precomposed ñ
    assert users.verify("ana", "contrasen\u0303a segura") is not None  # n + combining tilde


@pytest.mark.parametrize(("password", "message"), [
    ("short", "too short"),
    ("123456789", "too short"),
    ("aaaaaaaaaaaaaa", "one character repeated"),
    ("x" * 1024 + "y", "too long"),
])
def test_weak_password_refused(users: Users, password: str, message: str) -> None:
    with pytest.raises(AccountError, match=message):
        users.add("ana", "social", password)
    assert users.count() == 0


@pytest.mark.parametrize(("name", "message"), [
    ("Ana", "lower case: use 'ana'"),
    ("a", "invalid user name"),
    ("-ana", "invalid user name"),
    ("ana lopez", "invalid user name"),
    ("ana/../x", "invalid user name"),
    ("ana\n", "invalid user name"),
    ("a" * 33, "invalid user name"),
    ("josé", "invalid user name"),
])
def test_bad_names_refused(users: Users, name: str, message: str) -> None:
    with pytest.raises(AccountError, match=message):
        users.add(name, "social", PASSWORD)


def test_good_names_accepted(users: Users) -> None:
    for name in ("ab", "ana.lopez", "foto_2", "0-x", "a" * 32):
        users.add(name, "social", PASSWORD)
    assert users.count() == 5


def test_unknown_role_and_duplicate_refused(users: Users) -> None:
    with pytest.raises(AccountError, match="unknown role 'boss'"):
        users.add("ana", "boss", PASSWORD)
    users.add("ana", "social", PASSWORD)
    with pytest.raises(AccountError, match="already exists"):
        users.add("ana", "designer", PASSWORD)
    with pytest.raises(AccountError, match="no user 'luis'"):
        users.set_role("luis", "social")
    with pytest.raises(AccountError, match="unknown role"):
        users.set_role("ana", "boss")
    with pytest.raises(AccountError, match="unknown language"):
        users.set_language("ana", "fr")
    assert users.set_language("ana", "en").language == "en"
    assert users.set_role("ana", "designer").role == "designer"


def test_hash_format_and_no_plaintext(users: Users) -> None:
    users.add("ana", "social", PASSWORD)
    raw = users.path.read_text()
    assert PASSWORD not in raw
    record = json.loads(raw)["users"]["1"]
    parts = record["password"].split("$")
    assert parts[:4] == ["scrypt", "16384", "8", "1"]
    import base64

    assert len(base64.b64decode(parts[4])) == 16 and len(base64.b64decode(parts[5])) == 32
    # a second user with the same password gets a different salt, hence a different hash
    users.add("luis", "social", PASSWORD)
    hashes = {r["password"] for r in json.loads(users.path.read_text())["users"].values()}
    assert len(hashes) == 2


def test_parameters_are_read_from_the_stored_hash(users: Users) -> None:
    """A hash made with other (raised) parameters still verifies."""
    import base64
    import hashlib

    users.add("ana", "social", "placeholder-pass")
    salt = b"s" * 16
    digest = hashlib.scrypt(PASSWORD.encode(), salt=salt, n=2**12, r=4, p=2, dklen=40)
    stored = (f"scrypt${2**12}$4$2${base64.b64encode(salt).decode()}$"
              f"{base64.b64encode(digest).decode()}")
    data = json.loads(users.path.read_text())
    data["users"]["1"]["password"] = stored
    users.path.write_text(json.dumps(data))
    assert users.verify("ana", PASSWORD) is not None
    assert users.verify("ana", "placeholder-pass") is None


def test_malformed_hash_is_damage_not_a_failed_login(users: Users) -> None:
    users.add("ana", "social", PASSWORD)
    data = json.loads(users.path.read_text())
    data["users"]["1"]["password"] = "plain:" + PASSWORD
    users.path.write_text(json.dumps(data))
    with pytest.raises(CorruptStateError, match="malformed password hash"):
        users.verify("ana", PASSWORD)


def test_unknown_user_costs_as_much_as_a_known_one(users: Users) -> None:
    users.add("ana", "social", PASSWORD)

    def best(name: str) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            users.verify(name, "wrong password!")
            times.append(time.perf_counter() - start)
        return min(times)

    known, unknown = best("ana"), best("nadie")
    assert unknown > known / 3 and known > unknown / 3, (known, unknown)


def test_set_password_checks_current_and_bumps_epoch(users: Users) -> None:
    before = users.add("ana", "social", PASSWORD)
    with pytest.raises(AccountError, match="current password is wrong"):
        users.set_password("ana", "not the password", "a new password")
    with pytest.raises(AccountError, match="too short"):
        users.set_password("ana", PASSWORD, "short")
    after = users.set_password("ana", PASSWORD, "a new password")
    assert after.epoch != before.epoch
    assert users.verify("ana", PASSWORD) is None
    assert users.verify("ana", "a new password") == after
    reset = users.set_password("ana", None, "an admin reset")  # the CLI's reset
    assert reset.epoch != after.epoch and users.verify("ana", "an admin reset")


def test_last_enabled_director_is_kept(users: Users) -> None:
    users.add("jefa", "director", PASSWORD)
    users.add("ana", "social", PASSWORD)
    for action in (lambda: users.remove("jefa"), lambda: users.set_role("jefa", "social"),
                   lambda: users.set_disabled("jefa", True)):
        with pytest.raises(AccountError, match="last enabled director"):
            action()
    assert users.get("jefa") == users.verify("jefa", PASSWORD)
    users.add("otra", "director", PASSWORD)
    users.set_disabled("otra", True)  # a disabled director does not count
    with pytest.raises(AccountError, match="last enabled director"):
        users.remove("jefa")
    users.set_disabled("otra", False)
    users.set_role("jefa", "assistant")
    users.remove("ana")
    with pytest.raises(AccountError, match="no user 'ana'"):
        users.remove("ana")
    assert [u.name for u in users.list()] == ["jefa", "otra"]


# -- sessions -------------------------------------------------------------------------


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def boot() -> list[str]:
    return ["boot-1"]


@pytest.fixture
def sessions(state: Path, users: Users, clock: Clock, boot: list[str]) -> Sessions:
    """Wall time and the boot's own clock move together here, unless a test steps one."""
    return Sessions(state, users, idle_s=3600, max_s=4 * 3600, clock=clock,
                    ticks=lambda: clock.now - 999_000.0, boot=lambda: boot[0])


def test_session_create_get_end(users: Users, sessions: Sessions) -> None:
    ana = users.add("ana", "social", PASSWORD)
    session = sessions.create(ana)
    assert len(session.id) >= 40 and len(session.csrf) >= 40 and session.id != session.csrf
    got = sessions.get(session.id)
    assert got == session
    assert sessions.get("not-a-session") is None and sessions.get("") is None
    assert sessions.get("x" * 10_000) is None
    sessions.end(session.id)
    assert sessions.get(session.id) is None


def test_sessions_file_holds_no_usable_id(users: Users, sessions: Sessions) -> None:
    session = sessions.create(users.add("ana", "social", PASSWORD))
    raw = sessions.path.read_text()
    assert session.id not in raw
    assert session.csrf in raw


def test_idle_expiry(users: Users, sessions: Sessions, clock: Clock) -> None:
    session = sessions.create(users.add("ana", "social", PASSWORD))
    for _ in range(3):  # use keeps it alive past idle_s
        clock.now += 3000
        assert sessions.get(session.id) is not None
    clock.now += 3601
    assert sessions.get(session.id) is None


def test_max_expiry_even_when_used(users: Users, sessions: Sessions, clock: Clock) -> None:
    session = sessions.create(users.add("ana", "social", PASSWORD))
    start = clock.now
    while clock.now - start < 4 * 3600 - 1800:
        clock.now += 1800
        assert sessions.get(session.id) is not None
    clock.now = start + 4 * 3600 + 1
    assert sessions.get(session.id) is None


def test_a_clock_step_within_a_boot_logs_nobody_out(
        state: Path, users: Users, clock: Clock) -> None:
    """NTP stepping the wall clock (forward after a Pi booted days behind, or back) ended
    every session mid-event: idle time and age are measured on the boot's own clock."""
    ticks = [100.0]
    sessions = Sessions(state, users, idle_s=3600, max_s=4 * 3600, clock=clock,
                        ticks=lambda: ticks[0], boot=lambda: "boot-1")
    ana = users.add("ana", "social", PASSWORD)
    for step in (3 * 86_400, -2 * 86_400 - 600):
        session = sessions.create(ana)
        ticks[0] += 60
        clock.now += 60 + step
        assert sessions.get(session.id) is not None, step
        ticks[0] += 3600 + 1  # idle longer than idle_s, by the boot's clock
        clock.now += 3600 + 1
        assert sessions.get(session.id) is None, step


def test_a_session_from_before_a_reboot_is_judged_by_wall_time(
        users: Users, sessions: Sessions, clock: Clock, boot: list[str]) -> None:
    session = sessions.create(users.add("ana", "social", PASSWORD))
    boot[0] = "boot-2"
    clock.now += 600
    assert sessions.get(session.id) is not None  # carried over the reboot
    clock.now -= 86_400  # the clock came back from the reboot behind its creation
    assert sessions.get(session.id) is None


def test_end_all_keeps_the_current_one(users: Users, sessions: Sessions) -> None:
    ana, luis = users.add("ana", "social", PASSWORD), users.add("luis", "social", PASSWORD)
    mine, other1, other2 = (sessions.create(ana) for _ in range(3))
    his = sessions.create(luis)
    assert sessions.end_all("ana", except_id=mine.id) == 2
    assert sessions.get(mine.id) is not None
    assert sessions.get(other1.id) is None and sessions.get(other2.id) is None
    assert sessions.get(his.id) is not None
    assert sessions.end_all("ana") == 1
    assert sessions.get(mine.id) is None


def test_password_change_disable_and_removal_end_sessions(users: Users,
                                                          sessions: Sessions) -> None:
    users.add("jefa", "director", PASSWORD)
    ana = users.add("ana", "social", PASSWORD)
    session = sessions.create(ana)
    users.set_password("ana", PASSWORD, "another password")
    assert sessions.get(session.id) is None

    session = sessions.create(users.get("ana"))  # type: ignore[arg-type]
    users.set_disabled("ana", True)
    assert sessions.get(session.id) is None
    users.set_disabled("ana", False)
    assert sessions.get(session.id) is None  # re-enabling does not revive old sessions

    session = sessions.create(users.get("ana"))  # type: ignore[arg-type]
    users.set_role("ana", "designer")  # the role is read per request: the session stays
    assert sessions.get(session.id) is not None
    users.remove("ana")
    assert sessions.get(session.id) is None
    users.add("ana", "social", PASSWORD)  # same name, new person: the old session stays dead
    assert sessions.get(session.id) is None


def test_touch_writes_at_most_once_a_minute(users: Users, sessions: Sessions,
                                            clock: Clock) -> None:
    session = sessions.create(users.add("ana", "social", PASSWORD))

    def stored() -> tuple[bytes, int]:
        return sessions.path.read_bytes(), sessions.path.stat().st_ino

    first = stored()
    for _ in range(5):
        clock.now += 10
        assert sessions.get(session.id) is not None
        assert stored() == first  # no write: same content, same file
    clock.now += TOUCH_INTERVAL_S
    touched = sessions.get(session.id)
    assert touched is not None and touched.last_seen == clock.now
    second = stored()
    assert second != first
    assert json.loads(second[0])["sessions"]["1"]["last_seen"] == clock.now
    clock.now += 30
    assert sessions.get(session.id) is not None
    assert stored() == second


def test_prune_drops_dead_sessions(users: Users, sessions: Sessions, clock: Clock) -> None:
    users.add("jefa", "director", PASSWORD)
    ana, luis = users.add("ana", "social", PASSWORD), users.add("luis", "social", PASSWORD)
    old = sessions.create(ana)
    clock.now += 3000
    fresh = sessions.create(luis)
    gone = sessions.create(users.add("temp", "social", PASSWORD))
    users.remove("temp")
    clock.now += 1000  # old is idle for 4000 s > 3600
    assert sessions.prune() == 2
    assert sessions.get(fresh.id) is not None
    assert sessions.get(old.id) is None and sessions.get(gone.id) is None
    assert len(json.loads(sessions.path.read_text())["sessions"]) == 1


# -- setup code -----------------------------------------------------------------------


def test_setup_code_only_while_no_user(state: Path, users: Users) -> None:
    setup = SetupCode(state, users)
    assert setup.needed()
    code = setup.issue()
    assert code is not None and len(code) == 14 and code.replace("-", "").isdigit()
    assert code.replace("-", "") not in setup.path.read_text()  # only its hash
    assert json.loads(setup.path.read_text())["hash"].startswith("scrypt$")
    director = setup.redeem(code, "jefa", PASSWORD)
    assert director.role == "director" and users.verify("jefa", PASSWORD) == director
    assert not setup.path.exists() and not setup.needed()
    with pytest.raises(AccountError, match="no setup code is pending"):
        setup.redeem(code, "otro", PASSWORD)
    assert setup.issue() is None
    assert users.count() == 1


def test_stale_setup_file_removed_once_a_user_exists(state: Path, users: Users) -> None:
    setup = SetupCode(state, users)
    code = setup.issue()
    assert code is not None
    users.add("admin", "director", PASSWORD)  # `acopio users add` on the console
    assert setup.issue() is None and not setup.path.exists()
    with pytest.raises(AccountError, match="no setup code is pending"):
        setup.redeem(code, "jefa", PASSWORD)


def test_wrong_code_refused_and_new_issue_replaces_old(state: Path, users: Users) -> None:
    setup = SetupCode(state, users)
    first = setup.issue()
    assert first is not None
    wrong = "0000-0000-0000" if first != "0000-0000-0000" else "1111-1111-1111"
    for bad in (wrong, "", "1234", "abcd-efgh-ijkl"):
        with pytest.raises(AccountError, match="wrong setup code"):
            setup.redeem(bad, "jefa", PASSWORD)
    second = setup.issue()
    assert second is not None and second != first
    with pytest.raises(AccountError, match="wrong setup code"):
        setup.redeem(first, "jefa", PASSWORD)
    assert users.count() == 0


@pytest.mark.parametrize("form", ["dashes", "plain", "spaces"])
def test_code_with_or_without_dashes(state: Path, users: Users, form: str) -> None:
    setup = SetupCode(state, users)
    code = setup.issue()
    assert code is not None
    typed = {"dashes": code, "plain": code.replace("-", ""),
             "spaces": " " + code.replace("-", " ") + "\n"}[form]
    assert setup.redeem(typed, "jefa", PASSWORD).role == "director"


def test_weak_password_keeps_the_code_usable(state: Path, users: Users) -> None:
    setup = SetupCode(state, users)
    code = setup.issue()
    assert code is not None
    with pytest.raises(AccountError, match="too short"):
        setup.redeem(code, "jefa", "short")
    assert setup.needed() and setup.redeem(code, "jefa", PASSWORD)


REDEEMER = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from appliance.accounts import AccountError, SetupCode, Users

    state, code, name, go = Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4])
    while not go.exists():
        time.sleep(0.001)
    try:
        SetupCode(state, Users(state)).redeem(code, name, "correct horse battery")
    except AccountError as exc:
        print("refused:", exc)
    else:
        print("created")
""")


def test_concurrent_redeems_create_exactly_one_director(state: Path, users: Users,
                                                        tmp_path: Path) -> None:
    code = SetupCode(state, users).issue()
    assert code is not None
    go = tmp_path / "go"
    procs = [subprocess.Popen([sys.executable, "-c", REDEEMER, state, code, f"jefa{i}", go],
                              cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for i in range(4)]
    time.sleep(0.5)  # let every interpreter start and wait at the line
    go.touch()
    outputs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    results = [out.decode().strip() for out, _ in outputs]
    assert results.count("created") == 1, results
    assert all(r.startswith("refused: no setup code is pending") for r in results
               if r != "created")
    assert [u.role for u in users.list()] == ["director"]


# -- login throttle -------------------------------------------------------------------


def test_throttle_blocks_after_attempts_per_name() -> None:
    clock = Clock(100.0)
    throttle = LoginThrottle(3, 60.0, clock)
    for _ in range(3):
        assert throttle.retry_after("10.0.0.5", "ana") == 0
        throttle.failed("10.0.0.5", "ana")
        clock.now += 1
    assert throttle.retry_after("10.0.0.5", "ana") == pytest.approx(57.0)
    assert throttle.retry_after("10.0.0.5", "ANA ") > 0  # case and padding buy nothing
    assert throttle.retry_after("10.0.0.5", "luis") == 0
    assert throttle.retry_after("10.0.0.6", "ana") == 0
    clock.now += 57
    assert throttle.retry_after("10.0.0.5", "ana") == 0  # the window passed


def test_throttle_success_clears_only_that_pair() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 60.0, clock)
    for name in ("ana", "ana", "luis", "luis"):
        throttle.failed("10.0.0.5", name)
    throttle.succeeded("10.0.0.5", "ana")
    assert throttle.retry_after("10.0.0.5", "ana") == 0
    assert throttle.retry_after("10.0.0.5", "luis") > 0


def test_throttle_caps_an_address_across_names() -> None:
    clock = Clock()
    throttle = LoginThrottle(3, 60.0, clock)
    for i in range(12):  # 4 * attempts, each name below its own limit
        assert throttle.retry_after("10.0.0.5", f"user{i}") == 0
        throttle.failed("10.0.0.5", f"user{i}")
    assert throttle.retry_after("10.0.0.5", "anyone") == pytest.approx(60.0)
    assert throttle.retry_after("10.0.0.9", "anyone") == 0
    assert throttle.attempt("10.0.0.5", "user0") > 0  # not even a right password is tried
    clock.now += 60
    assert throttle.retry_after("10.0.0.5", "anyone") == 0


def test_an_attempt_is_counted_when_it_is_let_through() -> None:
    clock = Clock()
    throttle = LoginThrottle(2, 60.0, clock)
    assert throttle.attempt("10.0.0.5", "ana") == 0
    assert throttle.attempt("10.0.0.5", "ana") == 0  # both in flight: both counted
    assert throttle.attempt("10.0.0.5", "ana") > 0
    throttle.succeeded("10.0.0.5", "ana")  # one of them was right
    assert throttle.attempt("10.0.0.5", "ana") == 0
    throttle.not_a_guess("10.0.0.5", "ana")  # a malformed request: it does not count
    assert throttle.attempt("10.0.0.5", "ana") == 0
    assert throttle.attempt("10.0.0.5", "ana") == 0
    assert throttle.attempt("10.0.0.5", "ana") > 0


def test_throttle_memory_is_bounded() -> None:
    clock = Clock()
    throttle = LoginThrottle(5, 60.0, clock, max_keys=100)
    for i in range(5000):
        throttle.failed(f"10.{i // 250}.{i % 250}.1", "x" * 10_000 + str(i))
        clock.now += 0.001
    assert len(throttle) <= 200
    assert all(len(name) <= 64 for _, name in throttle._pairs)
    for _ in range(5):  # the newest key is still counted
        throttle.failed("192.168.1.1", "ana")
    assert throttle.retry_after("192.168.1.1", "ana") > 0


# -- CLI ------------------------------------------------------------------------------


def users_cli(data_dir: Path, *args: str, password: str | None = None
              ) -> subprocess.CompletedProcess:
    return run_cli("--data-dir", data_dir, "users", *args,
                   input=None if password is None else (password + "\n").encode())


def test_cli_add_list_passwd_remove(data_dir: Path) -> None:
    result = users_cli(data_dir, "add", "jefa", "--role", "director", "--password-stdin",
                       password=PASSWORD)
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().strip() == "created jefa (director)"
    users = Users(data_dir / "state")
    assert users.verify("jefa", PASSWORD) is not None  # newline stripped
    assert users_cli(data_dir, "add", "ana", "--role", "photographer", "--password-stdin",
                     password="ana's password").returncode == 0

    listed = users_cli(data_dir, "list", "--json")
    assert listed.returncode == 0
    rows = json.loads(listed.stdout)
    assert [(r["name"], r["role"], r["disabled"]) for r in rows] == [
        ("ana", "photographer", False), ("jefa", "director", False)]
    assert all("password" not in r for r in rows)
    text = users_cli(data_dir, "list").stdout.decode()
    assert "jefa" in text and "photographer" in text and "2 users" in text

    sessions = Sessions(data_dir / "state", users, idle_s=3600, max_s=7200)
    session = sessions.create(users.get("ana"))  # type: ignore[arg-type]
    result = users_cli(data_dir, "passwd", "ana", "--password-stdin", password="brand new pw")
    assert result.returncode == 0, result.stderr
    assert users.verify("ana", "brand new pw") is not None
    assert users.verify("ana", "ana's password") is None
    assert sessions.get(session.id) is None

    result = users_cli(data_dir, "remove", "ana")
    assert result.returncode == 0, result.stderr
    assert [u.name for u in users.list()] == ["jefa"]


def test_cli_refuses_password_on_command_line(data_dir: Path) -> None:
    result = users_cli(data_dir, "add", "jefa", "--role", "director")
    assert result.returncode == 2
    assert "--password-stdin" in result.stderr.decode()
    result = users_cli(data_dir, "add", "jefa", "--role", "director", "--password", PASSWORD)
    assert result.returncode == 2
    result = users_cli(data_dir, "passwd", "jefa")
    assert result.returncode == 2 and "--password-stdin" in result.stderr.decode()
    assert not (data_dir / "state" / "users.json").exists()


def test_cli_reports_account_errors(data_dir: Path) -> None:
    result = users_cli(data_dir, "add", "Jefa", "--role", "director", "--password-stdin",
                       password=PASSWORD)
    assert result.returncode == 2
    assert result.stderr.decode().startswith("acopio: user names are lower case")
    result = users_cli(data_dir, "add", "jefa", "--role", "director", "--password-stdin",
                       password="short")
    assert result.returncode == 2 and "too short" in result.stderr.decode()
    result = users_cli(data_dir, "add", "jefa", "--role", "boss", "--password-stdin",
                       password=PASSWORD)
    assert result.returncode == 2 and "invalid choice" in result.stderr.decode()
    assert users_cli(data_dir, "add", "jefa", "--role", "director", "--password-stdin",
                     password=PASSWORD).returncode == 0
    result = users_cli(data_dir, "remove", "jefa")
    assert result.returncode == 2
    assert "last enabled director" in result.stderr.decode()
    result = users_cli(data_dir, "remove", "nadie")
    assert result.returncode == 2 and "no user 'nadie'" in result.stderr.decode()
    result = users_cli(data_dir, "passwd", "nadie", "--password-stdin", password=PASSWORD)
    assert result.returncode == 2 and "no user 'nadie'" in result.stderr.decode()



def test_secret_state_files_are_private(data_dir: Path) -> None:
    """Password hashes, session hashes and the setup code's hash: owner-only files."""
    users = Users(data_dir / "state")
    code = SetupCode(data_dir / "state", users).issue()
    assert code
    setup_file = data_dir / "state" / "setup.json"
    assert setup_file.stat().st_mode & 0o777 == 0o600
    users.add("ana", "director", "contraseña-larga-1")
    sessions = Sessions(data_dir / "state", users, idle_s=3600, max_s=7200)
    sessions.create(users.get("ana"))
    for name in ("users.json", "sessions.json"):
        assert (data_dir / "state" / name).stat().st_mode & 0o777 == 0o600, name
