"""The web UI under attack (design decision 9): every route classified and guarded, roles,
CSRF, DNS rebinding, spoofed forwarding headers, stolen or stale cookies, path traversal,
XSS through file names and agenda titles, security headers, throttling, oversized bodies.

The attacks that depend on the socket (the peer's address, raw request paths) are made
against a real `acopio serve` over a real connection, not only the in-process test client.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from werkzeug.http import parse_options_header
from werkzeug.routing import Rule

from appliance.accounts import PERMISSIONS, ROLES, Users, allowed
from appliance.agenda import Activity, Agenda
from appliance.datadir import DataDir
from appliance.web import security
from appliance.web.i18n import MESSAGES
from appliance.web.security import CSRF_COOKIE, CSRF_HEADER, SESSION_COOKIE
from tests.cards import exif_jpeg
from tests.conftest import run_cli
from tests.webclient import (
    PASSWORD,
    ZONE,
    RealServer,
    WebApp,
    claim_large_body,
    form_token,
    real_server,
    web_app,
)

# -- a small real archive with hostile names -------------------------------------------------

SCRIPT_NAME = "<script>alert(1)<script>.jpg"  # a file name cannot hold "/" (so no "</script>")
ATTR_NAME = '"><img src=x onerror=alert(1)>.jpg'
PLAIN_NAME = "plaza.jpg"
HOSTILE_TITLE = '<script>alert("agenda")</script> Informe & "Obras"'
HOSTILE_AREA = "<b onmouseover=alert(2)>Obras</b>"
SLUG = "informe-de-obras"
MONTH = "2026-11"
FOLDER = f"2026-11-10_{SLUG}"
# Nothing of these may ever reach a page unescaped.
RAW_MARKERS = ("<script>alert", "<img src=x", "<b onmouseover")


@dataclass
class Archive:
    data_dir: Path
    sha: dict[str, str]

    def copy_to(self, data_dir: Path) -> Path:
        import shutil

        shutil.copytree(self.data_dir, data_dir, dirs_exist_ok=True,
                        ignore=shutil.ignore_patterns("query.sqlite*"))
        return data_dir


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Archive:
    """Files with HTML in their names imported for real from a plain folder (FAT cannot
    hold `<>"`, a folder can), filed into an agenda activity whose title is HTML."""
    root = tmp_path_factory.mktemp("hostile")
    data = root / "data"
    DataDir.at(data).ensure()
    Agenda(DataDir.at(data).state).add(Activity(
        slug=SLUG, title=HOSTILE_TITLE, area=HOSTILE_AREA, place="<i>Palacio</i>",
        start=datetime(2026, 11, 10, 9, 0, tzinfo=ZONE),
        end=datetime(2026, 11, 10, 12, 0, tzinfo=ZONE)))
    source = root / "carpeta"
    exif_jpeg(source / PLAIN_NAME, "2026:11:10 10:00:00", "-06:00", color=(1, 2, 3))
    exif_jpeg(source / SCRIPT_NAME, "2026:11:10 10:01:00", "-06:00", color=(4, 5, 6))
    exif_jpeg(source / ATTR_NAME, "2026:11:10 10:02:00", "-06:00", color=(7, 8, 9))
    done = run_cli("--data-dir", data, "ingest", source)
    assert done.returncode == 0, done.stderr.decode()
    worked = run_cli("--data-dir", data, "worker", "--once", timeout=300)
    assert worked.returncode == 0, worked.stderr.decode()
    items = json.loads(run_cli("--data-dir", data, "items", "--json").stdout)
    sha = {i["original_name"]: i["sha256"] for i in items}
    assert set(sha) == {PLAIN_NAME, SCRIPT_NAME, ATTR_NAME}
    assert {i["folder"] for i in items} == {f"2026/11/{FOLDER}"}
    return Archive(data_dir=data, sha=sha)


@pytest.fixture
def web(archive: Archive, data_dir: Path) -> Iterator[WebApp]:
    archive.copy_to(data_dir)
    with web_app(data_dir) as built:
        yield built


def text(response: Any) -> str:
    return response.get_data(as_text=True)


# -- every route, classified -------------------------------------------------------------

PUBLIC = frozenset({"static", "auth.login", "auth.setup", "auth.api_login", "auth.api_setup",
                    "auth.language",
                    # the kiosk screen: read-only, approved items only (tests/test_kiosk.py)
                    "kiosk.mural", "kiosk.api_mural", "kiosk.media", "kiosk.logo"})
LOGGED_IN = None  # any logged-in user, whatever the role
# endpoint -> the permission it needs. A new route fails test_every_route_is_classified
# until it is added here (and so to the anonymous and role checks below).
GUARDED: dict[str, str | None] = {
    "auth.logout": LOGGED_IN, "auth.api_logout": LOGGED_IN, "auth.api_me": LOGGED_IN,
    "auth.account": LOGGED_IN, "auth.api_password": LOGGED_IN,
    "browse.recent": "view", "browse.months": "view", "browse.month": "view",
    "browse.folder": "view", "browse.item": "view", "browse.search": "view",
    "browse.status": "view",
    "media.derivative": "view", "media.original": "download",
    "api.items": "view", "api.item": "view", "api.months": "view", "api.month": "view",
    "api.status": "view",
    "api.record": "record",
    "api.users": "manage_users", "api.add_user": "manage_users",
    "api.remove_user": "manage_users",
    "admin.users": "manage_users", "admin.add": "manage_users",
    "admin.remove": "manage_users", "admin.set_enabled": "manage_users",
    "editing.edit": "edit_items", "editing.edit_selection": "edit_items",
    "editing.refile": "edit_items", "editing.approve": "approve",
    "editing.withdraw": "approve", "editing.approve_selection": "approve",
    "editing.download": "download", "editing.zip_download": "download",
    "editing.fetch": "download", "browse.fetch_back": "download",
    "agenda.listing": "view", "agenda.add": "manage_agenda", "agenda.change": "manage_agenda",
    "agenda.remove": "manage_agenda", "agenda.set_current": "manage_agenda",
    "desk.agenda": "view", "desk.activity": "view", "desk.agenda_add": "manage_agenda",
    "desk.activity_change": "manage_agenda", "desk.activity_remove": "manage_agenda",
    "desk.set_current": "manage_agenda", "desk.item_edit": "edit_items",
    "desk.item_approval": "approve", "desk.item_refile": "edit_items",
    "desk.zip_download": "download",
    "kiosk.settings": "manage_kiosk", "kiosk.save_settings": "manage_kiosk",
    "reports.results": "view", "reports.mural": "print_mural",
}


def routes(app: Any) -> list[tuple[Rule, str]]:
    """(rule, method) of every route, without the HEAD and OPTIONS Flask adds."""
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((rule, method))
    return out


def fill(rule: Rule, sha: str) -> str:
    """The rule's URL with plausible values: a real item, its month and folder, a derivative
    that exists, a user that does not, a device that does not."""
    values = {"sha256": sha, "month": MONTH, "folder": FOLDER, "device_id": "mic-usb-1",
              # an activity's page that exists (GET); writes to it get one that does not
              "slug": SLUG if rule.endpoint == "desk.activity" else "no-existe",
              "filename": "app.css",
              "name": "thumb" if rule.endpoint == "media.derivative" else "nadie"}
    url = re.sub(r"<(?:[^:<>]+:)?(\w+)>", lambda m: values[m[1]], rule.rule)
    assert "<" not in url, rule.rule
    return url


# What a logged-in user sends to each write (harmless: allowed, it fails on its merits,
# refused, it changes nothing).
WRITES: dict[str, dict[str, Any]] = {
    "admin.add": {"data": {"username": "zz", "role": "emperador", "password": PASSWORD}},
    "admin.remove": {"data": {}},
    "admin.set_enabled": {"data": {"disabled": "1"}},
    "api.add_user": {"json": {"username": "zz", "role": "emperador", "password": PASSWORD}},
    "api.remove_user": {},
    "api.record": {"json": {"action": "start"}},
    "auth.account": {"data": {"current": "no-es-la-clave", "new": "otra-clave-123"}},
    "auth.api_password": {"json": {"current": "no-es-la-clave", "new": "otra-clave-123"}},
    "editing.edit": {"json": {"rating": 9}},
    "editing.edit_selection": {"json": {"sha256": ["0" * 64], "changes": {"rating": 1}}},
    "editing.refile": {"json": {"sha256": ["0" * 64], "activity": "no-existe"}},
    "editing.approve": {"json": {}}, "editing.withdraw": {"json": {}},
    "editing.approve_selection": {"json": {"sha256": ["0" * 64], "approved": True}},
    "editing.zip_download": {"json": {"sha256": ["0" * 64]}},
    "editing.fetch": {"json": {}}, "browse.fetch_back": {"data": {}},
    "agenda.add": {"json": {"title": ""}},
    "agenda.change": {"json": {"end": "no-es-fecha"}},
    "agenda.remove": {},
    "agenda.set_current": {"json": {"activity": "no-existe"}},
    "desk.agenda_add": {"data": {"title": ""}},
    "desk.activity_change": {"data": {"end": "no-es-fecha"}},
    "desk.activity_remove": {"data": {}},
    "desk.set_current": {"data": {"activity": "no-existe"}},
    "desk.item_edit": {"data": {"rating": "9"}},
    "desk.item_approval": {"data": {}},
    "desk.item_refile": {"data": {"activity": "no-existe"}},
    "desk.zip_download": {"data": {"sha256": "0" * 64}},
    "kiosk.save_settings": {"data": {"interval_s": "nunca"}},
}
# Ending the session is tested on its own (test_web.py); here it would log the tester out.
SKIP_FOR_ROLES = {"auth.logout", "auth.api_logout"}


def test_every_route_is_classified(web: WebApp) -> None:
    endpoints = {rule.endpoint for rule in web.app.url_map.iter_rules()}
    unclassified = endpoints - PUBLIC - set(GUARDED)
    assert not unclassified, (
        f"new routes {sorted(unclassified)}: classify them in GUARDED (the permission they "
        "need) or PUBLIC in tests/test_web_security.py")
    assert not (set(GUARDED) | PUBLIC) - endpoints, "routes listed here no longer exist"
    assert security.PUBLIC_ENDPOINTS == PUBLIC  # the app's own list says the same
    for endpoint, permission in GUARDED.items():
        if permission is not None:
            assert permission in PERMISSIONS, endpoint
    for rule, method in routes(web.app):
        if method != "GET" and rule.endpoint in GUARDED:
            assert rule.endpoint in WRITES or rule.endpoint in SKIP_FOR_ROLES, (
                f"{method} {rule.rule}: add a harmless request for it to WRITES")


def test_anonymous_requests_are_refused_everywhere_but_the_public_routes(
        web: WebApp, archive: Archive) -> None:
    web.user("directora")
    sha = archive.sha[PLAIN_NAME]
    checked = 0
    for cookie in (None, "inventada-" + "x" * 30):
        for rule, method in routes(web.app):
            if rule.endpoint in PUBLIC:
                continue
            url = fill(rule, sha)
            browser = web.client()
            if cookie:
                browser.set_cookie(SESSION_COOKIE, cookie)
            response = browser.open(url, method=method, json={} if method != "GET" else None)
            where = f"{method} {url}"
            if url.startswith("/api/"):
                assert response.status_code == 401, where
                assert response.get_json()["error"] == "unauthorized", where
            elif method == "GET":
                assert response.status_code == 302, where
                target = urlsplit(response.headers["Location"])
                assert target.path == "/login", where
            else:
                assert response.status_code in (401, 403), where
            assert SESSION_COOKIE not in response.headers.get("Set-Cookie", ""), where
            checked += 1
    assert checked >= 2 * 27

    # The public ones answer without a login (no 401, no redirect to the login).
    anonymous = web.client()
    assert anonymous.get("/login").status_code == 200
    assert anonymous.get("/static/app.css").status_code == 200
    assert anonymous.get("/static/app.js").status_code == 200
    assert anonymous.get("/setup").status_code == 302  # a user exists: go to the login
    assert anonymous.post("/api/login", json={"username": "directora",
                                              "password": PASSWORD}).status_code == 200


def test_the_same_urls_work_when_logged_in(web: WebApp, archive: Archive) -> None:
    """So the refusals above are refusals, not 404s of badly filled URLs."""
    director = web.user_and_login("directora")
    for rule, method in routes(web.app):
        if method != "GET" or rule.endpoint in PUBLIC:
            continue
        url = fill(rule, archive.sha[PLAIN_NAME])
        assert director.get(url).status_code == 200, url


def test_each_role_is_refused_what_it_may_not_do(web: WebApp, archive: Archive) -> None:
    clients = {role: web.user_and_login(f"u-{role}", role) for role in ROLES}
    sha = archive.sha[PLAIN_NAME]
    refused = passed = 0
    for rule, method in routes(web.app):
        if rule.endpoint in PUBLIC or rule.endpoint in SKIP_FOR_ROLES:
            continue
        permission = GUARDED[rule.endpoint]
        url = fill(rule, sha)
        for role, browser in clients.items():
            users_before = web.ctx.users.list()
            response = browser.write(method, url, **WRITES.get(rule.endpoint, {}))
            where = f"{role}: {method} {url}"
            if permission is not None and not allowed(role, permission):
                assert response.status_code == 403, where
                assert web.ctx.users.list() == users_before, where
                refused += 1
            else:
                assert response.status_code not in (401, 403), where
                assert response.status_code < 500, where
                if method == "GET":
                    assert response.status_code == 200, where
                passed += 1
    # designer: record; everyone but the director: users (page and API) and approval (one,
    # withdraw, a selection, the page's form); designer: editing (PATCH, batch, re-file,
    # the page's edit and re-file forms); everyone but director and assistant: the agenda
    # (API: add, change, remove, current; pages: the same four); everyone but the director:
    # the kiosk's settings (page and form); photographer, social, assistant: the printed
    # mural's page
    assert refused == 1 + 4 * 7 + 4 * 4 + 5 + 3 * 8 + 4 * 2 + 3
    assert passed > refused
    # The refused roles were refused for real, not for a missing session.
    for browser in clients.values():
        assert browser.get("/api/me").status_code == 200


# -- CSRF --------------------------------------------------------------------------------


def test_writes_without_the_right_csrf_token_are_refused(web: WebApp) -> None:
    director = web.user_and_login("directora")
    other = web.user_and_login("otra", "director")
    body = {"username": "intruso", "role": "director", "password": PASSWORD}
    for headers in ({}, {CSRF_HEADER: "equivocado"}, {CSRF_HEADER: other.csrf},
                    {CSRF_HEADER: ""}):
        refused = director.post("/api/users", json=body, headers=headers)
        assert refused.status_code == 403, headers
        assert refused.get_json()["error"] == "csrf"
        # the page's script shows it: in Spanish, not "missing or wrong CSRF token"
        assert refused.get_json()["message"] == MESSAGES["es-MX"]["error.csrf"]
    assert web.ctx.users.get("intruso") is None
    logged_out = web.client().get("/api/items")
    assert logged_out.status_code == 401
    assert logged_out.get_json()["message"] == MESSAGES["es-MX"]["error.401"]

    form = {"username": "intruso", "role": "director", "password": PASSWORD}
    for token in (None, "equivocado", other.csrf):
        data = dict(form) if token is None else {**form, "csrf_token": token}
        refused = director.post("/usuarios", data=data)
        assert refused.status_code == 403, token
        assert MESSAGES["es-MX"]["error.csrf"] in text(refused), token
    assert web.ctx.users.get("intruso") is None

    assert director.delete("/api/users/otra").status_code == 403
    assert director.post("/usuarios/otra/activo", data={"disabled": "1"}).status_code == 403
    assert director.post("/usuarios/otra/eliminar").status_code == 403
    assert not web.ctx.users.get("otra").disabled
    assert director.post("/api/password", json={"current": PASSWORD,
                                                "new": "robada-clave-1"}).status_code == 403
    assert director.post("/logout").status_code == 403  # no forced logout either
    assert director.post("/idioma", data={"language": "en"}).status_code == 403
    assert web.ctx.users.get("directora").language == ""
    assert director.get("/api/me").status_code == 200 and other.get("/api/me").status_code \
        == 200

    # With the page's own token the same form works.
    token = form_token(text(director.get("/usuarios")))
    made = director.post("/usuarios", data={**form, "csrf_token": token})
    assert made.status_code == 200 and web.ctx.users.get("intruso") is not None
    made = director.post("/api/users", json={**body, "username": "intrusa"},
                         headers={CSRF_HEADER: director.csrf})
    assert made.status_code == 201


def test_cross_site_login_is_refused(web: WebApp) -> None:
    web.user("directora")
    # What a form on another site can send: form-encoded or text/plain, never JSON.
    victim = web.client()
    forged = victim.post("/api/login", data={"username": "directora", "password": PASSWORD})
    assert forged.status_code == 403 and victim.session_id is None
    forged = victim.post("/api/login", data=json.dumps({"username": "directora",
                                                       "password": PASSWORD}),
                         content_type="text/plain")
    assert forged.status_code == 403 and victim.session_id is None

    # The form login is a double submit: cookie and field must agree.
    fresh = web.client()  # never saw the login page: no cookie
    forged = fresh.post("/login", data={"csrf_token": "a" * 43, "username": "directora",
                                        "password": PASSWORD})
    assert forged.status_code == 403 and fresh.session_id is None
    token = form_token(text(fresh.get("/login")))
    for field in (None, "b" * 43, ""):
        data = {"username": "directora", "password": PASSWORD}
        if field is not None:
            data["csrf_token"] = field
        assert fresh.post("/login", data=data).status_code == 403, field
    assert fresh.session_id is None
    fresh.set_cookie(CSRF_COOKIE, "c" * 43)  # a cookie the attacker cannot set cross-site
    assert fresh.post("/login", data={"csrf_token": token, "username": "directora",
                                      "password": PASSWORD}).status_code == 403
    fresh.set_cookie(CSRF_COOKIE, token)
    done = fresh.post("/login", data={"csrf_token": token, "username": "directora",
                                      "password": PASSWORD})
    assert done.status_code == 302 and fresh.session_id


def test_login_redirects_only_to_this_box(web: WebApp) -> None:
    web.user("directora")
    for target, expected in (("/archivo", "/archivo"), ("//evil.example", "/"),
                             ("https://evil.example/", "/"), ("/\\evil.example", "/"),
                             ("/%09/evil.example", "/"), ("/%0d%0aSet-Cookie:%20x=1", "/"),
                             ("%2F%2Fevil.example", "/"), ("javascript:alert(1)", "/")):
        browser = web.client()
        token = form_token(text(browser.get("/login")))
        done = browser.post(f"/login?next={target}", data={
            "csrf_token": token, "username": "directora", "password": PASSWORD})
        assert done.status_code == 302, target
        assert done.headers["Location"] == expected, target
        # the language form's field arrives decoded: "/%09/..." there is a real tab
        switched = browser.post("/idioma", data={"csrf_token": browser.cookie(CSRF_COOKIE),
                                                 "language": "en", "next": unquote(target)})
        assert switched.status_code == 302 and switched.headers["Location"] == expected


# -- Host header (DNS rebinding) -----------------------------------------------------------


def _as(app: Any, url: str, host: str, session: str | None = None, method: str = "GET",
        **kwargs: Any) -> Any:
    """A request with exactly this Host header (and session cookie, set by hand: the test
    client's cookie jar would only send it to "localhost")."""
    browser = app.test_client(use_cookies=False)
    headers = {"Host": host}
    if session:
        headers["Cookie"] = f"{SESSION_COOKIE}={session}"
    return browser.open(url, method=method, headers=headers, **kwargs)


ELSEWHERE = ("evil.example", "evil.example:8080", "localhost.evil.example",
             "127.0.0.1.nip.io", "prensa-norte.local.evil.example", "a@b", "", "evil example",
             "[::1", "local host", "acopio.local", "evil.example:80")


def test_foreign_host_names_are_refused_before_anything_else(data_dir: Path) -> None:
    env = {"ACOPIO_KIT_NAME": "Prensa Norte",
           "ACOPIO_WEB_ALLOWED_HOSTS": "fotos.ayuntamiento.example, Otra.Example"}
    with web_app(data_dir, env) as built:
        built.user("directora")
        session = built.login("directora").session_id
        hostname = socket.gethostname()
        for host in ("192.168.1.20:8080", "192.168.1.20", "10.0.0.5", "localhost",
                     "localhost:8080", "LOCALHOST", f"{hostname}.local", hostname,
                     "prensa-norte.local", "prensa-norte.local:8080", "prensa-norte.local.",
                     "fotos.ayuntamiento.example", "otra.example", "[::1]:8080", "[fe80::1]"):
            response = _as(built.app, "/api/me", host, session)
            assert response.status_code == 200, host
        for host in ELSEWHERE:
            if host.split(":")[0] in (hostname, f"{hostname}.local"):
                continue
            answers = []
            for url, method in (("/", "GET"), ("/login", "GET"), ("/api/items", "GET"),
                                ("/api/me", "GET"), ("/static/app.css", "GET"),
                                ("/api/login", "POST"), ("/no-existe", "GET")):
                for cookie in (None, session):
                    kwargs = ({"json": {"username": "directora", "password": PASSWORD}}
                              if method == "POST" else {})
                    response = _as(built.app, url, host, cookie, method, **kwargs)
                    assert response.status_code == 400, (host, url)
                    assert text(response) == "Host no permitido / Host not allowed\n"
                    assert "Set-Cookie" not in response.headers, (host, url)
                    answers.append((response.status_code, response.get_data()))
            assert len(set(answers)) == 1, host  # logged in or not: the same answer


# -- stolen and stale cookies --------------------------------------------------------------


def test_cookies_stop_working_after_logout_password_change_disable_and_removal(
        web: WebApp) -> None:
    director = web.user_and_login("directora")
    web.user("ana", "photographer")

    def replay(session_id: str | None) -> int:
        thief = web.client()
        thief.set_cookie(SESSION_COOKIE, session_id or "")
        return thief.get("/api/items").status_code

    stolen = web.login("ana").session_id
    assert replay(stolen) == 200
    out = web.login("ana")
    old = out.session_id
    out.write("POST", "/api/logout")
    assert replay(old) == 401

    ana = web.login("ana")
    assert ana.write("POST", "/api/password", json={"current": PASSWORD,
                                                    "new": "nueva-clave-ana1"}).status_code == 200
    assert replay(stolen) == 401  # every other session ended
    assert replay(ana.session_id) == 200

    stolen = ana.session_id
    director.form("/usuarios/ana/activo", {"disabled": "1"})
    assert replay(stolen) == 401
    director.form("/usuarios/ana/activo", {"disabled": "0"})
    assert replay(stolen) == 401  # enabling again does not bring old sessions back

    stolen = web.login("ana", "nueva-clave-ana1").session_id
    assert director.write("DELETE", "/api/users/ana").status_code == 200
    web.user("ana", "director")  # a new user of the same name
    assert replay(stolen) == 401


def test_the_session_file_holds_no_usable_session_id(web: WebApp) -> None:
    web.user("directora")
    browser = web.login("directora")
    session_id = browser.session_id
    assert session_id and len(session_id) >= 40
    stored = (web.ctx.data.state / "sessions.json").read_text()
    assert session_id not in stored
    assert hashlib.sha256(session_id.encode()).hexdigest() in stored
    assert (web.ctx.data.state / "sessions.json").stat().st_mode & 0o077 == 0
    for key in re.findall(r'"key":\s*"([0-9a-f]{64})"', stored):
        assert web.client().get("/api/items", headers={
            "Cookie": f"{SESSION_COOKIE}={key}"}).status_code == 401
    users = (web.ctx.data.state / "users.json").read_text()
    assert PASSWORD not in users and "scrypt$" in users


# -- throttling ------------------------------------------------------------------------------


def test_login_is_throttled_per_address_and_name(data_dir: Path) -> None:
    with web_app(data_dir, {"ACOPIO_WEB_LOGIN_ATTEMPTS": "3"}) as built:
        built.user("ana", "photographer")
        built.user("beto", "social")
        browser = built.client()
        for _ in range(3):
            wrong = browser.post("/api/login", json={"username": "ana", "password": "nope-nope-1"})
            assert wrong.status_code == 401
        blocked = browser.post("/api/login", json={"username": "ana", "password": "nope-nope-1"})
        assert blocked.status_code == 429
        assert 0 < int(blocked.headers["Retry-After"]) <= 300
        right = browser.post("/api/login", json={"username": "ana", "password": PASSWORD})
        assert right.status_code == 429 and browser.session_id is None
        # Case and spaces in the name buy no extra tries.
        assert browser.post("/api/login", json={"username": " ANA ",
                                                "password": PASSWORD}).status_code == 429
        # The form says so too, in Spanish.
        token = form_token(text(browser.get("/login")))
        page = browser.post("/login", data={"csrf_token": token, "username": "ana",
                                            "password": PASSWORD})
        assert page.status_code == 429 and "Demasiados intentos" in text(page)
        assert page.headers.get("Retry-After")
        # Another name from the same address, and the same name from another address, pass.
        assert browser.post("/api/login", json={"username": "beto",
                                                "password": PASSWORD}).status_code == 200
        elsewhere = built.client()
        assert elsewhere.post("/api/login", json={"username": "ana", "password": PASSWORD},
                              environ_base={"REMOTE_ADDR": "192.168.1.77"}).status_code == 200


def test_setup_code_guessing_is_throttled(data_dir: Path) -> None:
    with web_app(data_dir, {"ACOPIO_WEB_LOGIN_ATTEMPTS": "3"}) as built:
        code = built.ctx.setup.issue()
        assert code
        guesser = built.client()
        for guess in ("1234-5678-9012", "0000-0000-0001", "9999-9999-9999"):
            if guess == code:
                continue
            refused = guesser.post("/api/setup", json={"code": guess, "username": "yo",
                                                       "password": PASSWORD})
            assert refused.status_code == 400
        blocked = guesser.post("/api/setup", json={"code": code, "username": "yo",
                                                   "password": PASSWORD})
        assert blocked.status_code == 429 and int(blocked.headers["Retry-After"]) > 0
        token = form_token(text(guesser.get("/setup")))
        page = guesser.post("/setup", data={"csrf_token": token, "code": code,
                                            "username": "yo", "password": PASSWORD})
        assert page.status_code == 429 and "Demasiados intentos" in text(page)
        assert built.ctx.users.count() == 0  # the right code did not help while blocked
        director = built.client()
        made = director.post("/api/setup", json={"code": code, "username": "directora",
                                                 "password": PASSWORD},
                             environ_base={"REMOTE_ADDR": "192.168.1.10"})
        assert made.status_code == 200


def test_oversized_bodies_are_refused(web: WebApp) -> None:
    director = web.user_and_login("directora")
    big = "x" * (1024 * 1024 + 1)
    refused = web.client().post("/api/login", data=json.dumps({"username": big,
                                                               "password": "p"}),
                                content_type="application/json")
    assert refused.status_code == 413
    browser = web.client()
    token = form_token(text(browser.get("/login")))
    assert browser.post("/login", data={"csrf_token": token, "username": "directora",
                                        "password": big}).status_code == 413
    made = director.write("POST", "/api/users", json={"username": "grande", "role": "social",
                                                      "password": big})
    assert made.status_code == 413 and web.ctx.users.get("grande") is None
    assert director.form("/usuarios", {"username": "grande", "role": "social",
                                       "password": big}).status_code == 413
    assert web.ctx.users.get("grande") is None


# -- path traversal --------------------------------------------------------------------------

OUTSIDE = ("scrypt$", "[project]", "root:x:0", '"sessions"', "acopio_session")


def traversal_paths(sha: str) -> list[str]:
    return [
        "/static/../pyproject.toml", "/static/%2e%2e/pyproject.toml",
        "/static/..%2fpyproject.toml", "/static/..%2f..%2fpyproject.toml",
        "/static/%2e%2e%2f%2e%2e%2fpyproject.toml", "/static/%252e%252e/pyproject.toml",
        "/static/..%252f..%252fpyproject.toml", "/static/....//....//pyproject.toml",
        "/static/%2e%2e%5c%2e%2e%5cpyproject.toml", "/static//etc/passwd",
        "/static/..%2f..%2f..%2f..%2f..%2fetc/passwd",
        f"/media/{sha}/../../state/users.json", f"/media/{sha}/..%2f..%2fstate%2fusers.json",
        f"/media/{sha}/%2e%2e", f"/media/{sha}/%2e%2e%2f%2e%2e%2fstate%2fusers.json",
        f"/media/{sha}/thumb/../../../state/users.json",
        "/media/..%2f..%2fstate%2fusers.json/thumb", "/media/%2e%2e/thumb",
        "/original/..%2f..%2fstate%2fusers.json", "/original/%2e%2e%2fstate%2fusers.json",
        "/original/..", f"/original/{sha}/..%2f..%2fstate%2fusers.json",
        "/original/%252e%252e%252fstate",
        "/archivo/2026-11/..%2f..%2fstate", "/archivo/%2e%2e/%2e%2e",
        "/archivo/2026-11/%2e%2e%2f%2e%2e%2fstate%2fusers",
        f"/archivo/2026-11/{FOLDER}%2f..%2f..%2f..%2fstate",
        "/item/..%2f..%2fstate%2fusers.json", "/item/%2e%2e",
        "/api/items/..%2f..%2fstate%2fusers.json", "/api/months/..%2f..",
        "/api/months/%2e%2e%2fstate",
    ]


def _local_redirect(location: str, where: str) -> str:
    """A redirect (Werkzeug merging "//") must stay on this box and out of the data."""
    target = urlsplit(location)
    assert target.netloc in ("", "localhost") or target.hostname == "127.0.0.1", where
    assert ".." not in target.path and "state" not in target.path, (where, location)
    return target.path + (f"?{target.query}" if target.query else "")


def _no_outside_content(body: bytes, where: str) -> None:
    for marker in OUTSIDE:
        assert marker.encode() not in body, (where, marker)


def test_path_traversal_is_refused_by_the_app(web: WebApp, archive: Archive) -> None:
    director = web.user_and_login("directora")
    sha = archive.sha[PLAIN_NAME]
    assert director.get(f"/media/{sha}/thumb").status_code == 200
    for path in traversal_paths(sha):
        response = director.get(path)
        if response.status_code == 308:  # "//" merged: the same refusals on the clean path
            target = _local_redirect(response.headers["Location"], path)
            response = director.get(target)
        assert response.status_code in (400, 404), (path, response.status_code)
        _no_outside_content(response.get_data(), path)


@dataclass
class Served:
    server: RealServer
    session: str  # a director's session cookie value
    sha: str


@pytest.fixture(scope="module")
def served(archive: Archive, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    data = archive.copy_to(tmp_path_factory.mktemp("served") / "data")
    users = Users(DataDir.at(data).state)
    users.add("directora", "director", PASSWORD)
    users.add("ana", "photographer", PASSWORD)
    users.add("luis", "photographer", PASSWORD)
    with real_server(data, {"ACOPIO_WEB_LOGIN_ATTEMPTS": "3"}) as server:
        status, headers, body = server.json("POST", "/api/login", {
            "username": "directora", "password": PASSWORD})
        assert status == 200, body
        cookie = next(c for c in headers.get_all("Set-Cookie")
                      if c.startswith(SESSION_COOKIE + "="))
        yield Served(server=server, session=cookie.split(";")[0].split("=", 1)[1],
                     sha=archive.sha[PLAIN_NAME])


@pytest.mark.slow
def test_path_traversal_is_refused_by_the_real_server(served: Served) -> None:
    cookie = {"Cookie": f"{SESSION_COOKIE}={served.session}"}
    status, _, body = served.server.request("GET", f"/media/{served.sha}/thumb", headers=cookie)
    assert status == 200 and body.startswith(b"\xff\xd8")
    for path in traversal_paths(served.sha):
        status, headers, body = served.server.request("GET", path, headers=cookie)
        if status == 308:
            target = _local_redirect(headers["Location"], path)
            status, headers, body = served.server.request("GET", target, headers=cookie)
        assert status in (400, 404), (path, status)
        _no_outside_content(body, path)


@pytest.mark.slow
def test_spoofed_forwarding_headers_do_not_bypass_the_login_throttle(served: Served) -> None:
    """The throttle counts the socket's peer (127.0.0.1 here), whatever the request claims."""
    server = served.server
    for attempt in range(3):
        spoof = f"203.0.113.{attempt + 1}"
        status, _, body = server.json("POST", "/api/login", {
            "username": "ana", "password": "equivocada-1"}, headers={
            "X-Forwarded-For": spoof, "X-Real-IP": spoof, "Forwarded": f"for={spoof}",
            "X-Client-IP": spoof})
        assert status == 401, body
    for spoof in ("198.51.100.7", "127.0.0.2", "::1"):
        status, headers, body = server.json("POST", "/api/login", {
            "username": "ana", "password": "equivocada-1"},
            headers={"X-Forwarded-For": spoof, "X-Real-IP": spoof})
        assert status == 429, (spoof, body)
        assert 0 < int(headers["Retry-After"]) <= 300
    status, headers, body = server.json("POST", "/api/login", {
        "username": "ana", "password": PASSWORD}, headers={"X-Forwarded-For": "10.9.9.9"})
    assert status == 429 and headers["Retry-After"]  # the right password waits too
    assert not any(c.startswith(SESSION_COOKIE) for c in headers.get_all("Set-Cookie") or [])


@pytest.mark.slow
def test_a_burst_of_parallel_logins_gets_no_extra_tries(served: Served) -> None:
    """The throttle's check and its count were two steps: every login already in flight
    passed the check, so 24 parallel guesses tried about a dozen passwords against a limit
    of 3. Now each attempt is counted as it is let through."""
    from concurrent.futures import ThreadPoolExecutor

    def guess(n: int) -> int:
        return served.server.json("POST", "/api/login", {
            "username": "luis", "password": f"equivocada-{n}"})[0]

    with ThreadPoolExecutor(24) as pool:
        statuses = list(pool.map(guess, range(24)))
    assert statuses.count(401) == 3 and statuses.count(429) == 21, statuses


@pytest.mark.slow
def test_a_huge_body_is_refused_before_it_is_stored(served: Served) -> None:
    """waitress stores a whole body before the app (and its 1 MiB limit, its login check)
    sees it, up to 1 GiB by default: a hundred connections from anyone on the LAN held a
    hundred GiB. A Content-Length over MAX_SPOOLED_BODY is now refused from the headers."""
    from appliance.web.server import MAX_SPOOLED_BODY

    answer = claim_large_body(served.server.port, "/api/login", 200_000_000)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    answer = claim_large_body(served.server.port, "/api/login", MAX_SPOOLED_BODY + 1)
    assert answer.startswith(b"HTTP/1.1 413"), answer[:200]
    status, _, _ = served.server.request("POST", "/api/login", body=b"{" + b" " * 2_000_000,
                                         headers={"Content-Type": "application/json"})
    assert status == 413  # between the two limits: the app's own answer


@pytest.mark.slow
def test_one_address_cannot_hold_every_connection(served: Served) -> None:
    """Slowloris: connections from one address sending a header byte now and then held all
    of waitress's 100, and nobody else was answered. Beyond web.connections_per_address
    (24) an address's connections are closed at once; another address is still served."""
    port = served.server.port
    held = []
    try:
        for _ in range(30):
            sock = socket.create_connection(("127.0.0.1", port), timeout=5)
            sock.sendall(b"GET /login HTTP/1.1\r\nHost: 127.0.0.1\r\n")  # never finished
            held.append(sock)
        def closed(sock: socket.socket) -> bool:  # by the server, at once: not left hanging
            try:
                return sock.recv(1) == b""
            except ConnectionResetError:
                return True

        assert [closed(sock) for sock in held[24:]] == [True] * 6
        other = socket.create_connection(("127.0.0.1", port), timeout=5,
                                         source_address=("127.0.0.2", 0))
        with other:
            other.sendall(f"GET /login HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
                          "Connection: close\r\n\r\n".encode())
            assert other.recv(64).startswith(b"HTTP/1.1 200"), "another address was not served"
    finally:
        for sock in held:
            sock.close()
        # The server notices the closed ones at its next loop: the tests after this one
        # share the server and this address.
        def answered() -> bool:
            try:
                return served.server.request("GET", "/login")[0] == 200
            except OSError:  # closed at once: not yet
                return False

        deadline = time.monotonic() + 15
        while not answered():
            assert time.monotonic() < deadline, "the held connections were never released"
            time.sleep(0.2)


@pytest.mark.slow
def test_the_real_server_refuses_foreign_hosts(served: Served) -> None:
    cookie = {"Cookie": f"{SESSION_COOKIE}={served.session}"}
    status, _, _ = served.server.request("GET", "/api/me", headers=cookie)
    assert status == 200
    for host in ("evil.example", f"evil.example:{served.server.port}", "127.0.0.1.nip.io"):
        for headers in ({"Host": host}, {"Host": host, **cookie}):
            status, _, body = served.server.request("GET", "/api/me", headers=headers)
            assert status == 400 and body == b"Host no permitido / Host not allowed\n", host
        status, _, body = served.server.request("GET", "/static/app.js",
                                                headers={"Host": host})
        assert status == 400, host


# -- XSS ---------------------------------------------------------------------------------------


def _check_escaped(page: str, where: str) -> None:
    for marker in RAW_MARKERS:
        assert marker not in page, (where, marker)
    for tag in re.findall(r"<script\b[^>]*>", page):
        assert " src=" in tag or 'type="application/json"' in tag, (where, tag)


def test_hostile_names_and_titles_are_escaped(web: WebApp, archive: Archive) -> None:
    browser = web.user_and_login("directora")
    sha = archive.sha
    folder_url = f"/archivo/{MONTH}/{FOLDER}"
    pages = {url: text(browser.get(url)) for url in (
        "/", "/archivo", f"/archivo/{MONTH}", folder_url,
        f"/item/{sha[SCRIPT_NAME]}", f"/item/{sha[ATTR_NAME]}", f"/item/{sha[PLAIN_NAME]}",
        "/buscar?q=script", "/buscar?q=%3Cscript%3Ealert(1)%3C/script%3E",
        "/buscar?q=%22%3E%3Cimg+src%3Dx+onerror%3Dalert(1)%3E&camera=%3Cb%3E")}
    for url, page in pages.items():
        _check_escaped(page, url)
    assert "&lt;script&gt;alert(1)&lt;script&gt;.jpg" in pages[f"/item/{sha[SCRIPT_NAME]}"]
    assert "&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.jpg" in pages[f"/item/{sha[ATTR_NAME]}"]
    # in attributes (alt and title of the grid's cells) too
    assert 'alt="&#34;&gt;&lt;img src=x onerror=alert(1)&gt;.jpg"' in pages["/"]
    escaped_title = html.escape(HOSTILE_TITLE).replace("&quot;", "&#34;").replace(
        "&#x27;", "&#39;")
    for url in (f"/archivo/{MONTH}", folder_url, f"/item/{sha[PLAIN_NAME]}"):
        assert escaped_title in pages[url], url
    assert "&lt;b onmouseover=alert(2)&gt;Obras&lt;/b&gt;" in pages[folder_url]
    assert 'value="&lt;script&gt;alert(1)&lt;/script&gt;"' in pages[
        "/buscar?q=%3Cscript%3Ealert(1)%3C/script%3E"]
    found = re.findall(r'href="/item/([0-9a-f]{64})"', pages["/buscar?q=script"])
    assert set(found) == set(sha.values())  # the file name or the activity's title
    found = re.findall(r'href="/item/([0-9a-f]{64})"', text(browser.get("/buscar?q=onerror")))
    assert found == [sha[ATTR_NAME]]

    # The policy forbids inline scripts, so even a missed escape would not run.
    csp = browser.get("/").headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
    assert directives["script-src"] == "'self'" and "unsafe" not in csp
    assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"

    # The JSON API gives the names as plain strings, unchanged.
    api = browser.get("/api/items?q=onerror").get_json()
    assert [i["original_name"] for i in api["items"]] == [ATTR_NAME]
    names = {i["original_name"] for i in browser.get("/api/items").get_json()["items"]}
    assert names == {PLAIN_NAME, SCRIPT_NAME, ATTR_NAME}
    months = browser.get(f"/api/months/{MONTH}").get_json()
    assert months["folders"][0]["title"] == HOSTILE_TITLE
    assert browser.get("/api/items").headers["Content-Type"] == "application/json"

    # The download keeps the name without letting it break the header.
    download = browser.get(f"/original/{sha[ATTR_NAME]}")
    disposition = download.headers["Content-Disposition"]
    assert download.status_code == 200 and "\n" not in disposition
    kind, options = parse_options_header(disposition)
    assert kind == "attachment" and options["filename"] == ATTR_NAME  # quoted, intact


def test_security_headers_on_every_answer(web: WebApp, archive: Archive) -> None:
    browser = web.user_and_login("directora")
    urls = [fill(rule, archive.sha[PLAIN_NAME]) for rule, method in routes(web.app)
            if method == "GET"]
    urls += ["/no-existe", "/item/" + "0" * 64, "/api/no-existe"]
    responses = [browser.get(url) for url in urls]
    responses.append(web.client().get("/login"))
    responses.append(web.client().get("/api/items"))  # a 401
    responses.append(browser.post("/api/users", json={}))  # a 403 (CSRF)
    responses.append(_as(web.app, "/", "evil.example"))  # a 400 (Host)
    for response in responses:
        headers = response.headers
        where = f"{response.request.path}: {response.status_code}"
        assert headers["Content-Security-Policy"] == security.CSP, where
        assert headers["X-Content-Type-Options"] == "nosniff", where
        assert headers["X-Frame-Options"] == "DENY", where
        assert headers["Referrer-Policy"] == "same-origin", where
        response.close()
