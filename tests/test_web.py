"""The LAN web UI, functionally: first start, accounts, browsing a real imported archive,
the JSON API, caching, live updates and languages. Attacks are in test_web_security.py."""

from __future__ import annotations

import hashlib
import html
import json
import os
import re
import string
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from appliance.accounts import ROLES, AccountError, Sessions
from appliance.web import browse
from appliance.web.i18n import LANGUAGES, MESSAGES
from appliance.web.security import CSRF_COOKIE, SESSION_COOKIE
from sync.kit.status import STATES as SYNC_STATES
from tests.cards import exif_jpeg
from tests.conftest import REPO, run_cli
from tests.webclient import (
    ACTIVITY,
    FIRST_BATCH,
    IN_ACTIVITY,
    PASSWORD,
    SECOND_BATCH,
    Library,
    WebApp,
    build_library,
    form_token,
    port_open,
    real_server,
    web_app,
)

TEMPLATES = REPO / "appliance" / "web" / "templates"
ITEM_LINK = re.compile(r'href="/item/([0-9a-f]{64})"')
IMMUTABLE = "private, max-age=31536000, immutable"


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    return build_library(tmp_path_factory.mktemp("library"))


@pytest.fixture
def web(data_dir: Path) -> Iterator[WebApp]:
    """An app on an empty data folder."""
    with web_app(data_dir) as built:
        yield built


@pytest.fixture
def archive(library: Library, data_dir: Path) -> Iterator[WebApp]:
    """An app on a private copy of the real imported archive."""
    library.copy_to(data_dir)
    with web_app(data_dir) as built:
        yield built


def text(response) -> str:
    return response.get_data(as_text=True)


def grid(response) -> list[str]:
    """The item hashes a grid page links to, in page order."""
    assert response.status_code == 200, text(response)
    return ITEM_LINK.findall(text(response))


def pager_links(page: str) -> dict[str, str]:
    """{"prev"/"next": href} of a page's pager."""
    found = re.findall(r'<a rel="(prev|next)" href="([^"]+)"', page)
    return {rel: html.unescape(href) for rel, href in found}


# -- first start -------------------------------------------------------------------------


def test_first_start_goes_to_setup_and_a_wrong_code_creates_nothing(web: WebApp) -> None:
    browser = web.client()
    first = browser.get("/")
    assert first.status_code == 302
    assert urlsplit(first.headers["Location"]).path == "/login"
    login = browser.get(first.headers["Location"])
    assert login.status_code == 302 and login.headers["Location"] == "/setup"
    page = browser.get("/setup")
    assert page.status_code == 200 and 'id="setup-form"' in text(page)
    token = form_token(text(page))
    assert browser.cookie(CSRF_COOKIE) == token  # the double-submit cookie

    code = web.ctx.setup.issue()
    assert code is not None and re.fullmatch(r"\d{4}-\d{4}-\d{4}", code)
    wrong = "0000-0000-0000" if code != "0000-0000-0000" else "1111-1111-1111"
    refused = browser.post("/setup", data={"csrf_token": token, "code": wrong,
                                           "username": "directora", "password": PASSWORD})
    assert refused.status_code == 400
    assert "El código no es válido" in text(refused)
    refused = browser.post("/api/setup", json={"code": wrong, "username": "directora",
                                               "password": PASSWORD})
    assert refused.status_code == 400 and refused.get_json()["error"] == "setup"
    assert web.ctx.users.count() == 0 and browser.session_id is None
    assert web.ctx.setup.needed()

    made = browser.post("/setup", data={"csrf_token": token, "code": code,
                                        "username": "directora", "password": PASSWORD})
    assert made.status_code == 302 and made.headers["Location"] == "/"
    assert browser.session_id
    me = browser.get("/api/me").get_json()
    assert me["user"]["name"] == "directora" and me["user"]["role"] == "director"
    assert browser.get("/").status_code == 200

    # Afterwards: /setup leads to the login, and the code is spent.
    other = web.client()
    gone = other.get("/setup")
    assert gone.status_code == 302 and gone.headers["Location"] == "/login"
    again = other.post("/api/setup", json={"code": code, "username": "intruso",
                                           "password": PASSWORD})
    assert again.status_code == 409
    token = form_token(text(other.get("/login")))
    again = other.post("/setup", data={"csrf_token": token, "code": code,
                                       "username": "intruso", "password": PASSWORD})
    assert again.status_code == 302 and again.headers["Location"] == "/login"
    assert [u.name for u in web.ctx.users.list()] == ["directora"]
    assert web.ctx.setup.issue() is None  # no new code once a user exists


def test_setup_through_the_json_api(web: WebApp) -> None:
    code = web.ctx.setup.issue()
    browser = web.client()
    made = browser.post("/api/setup", json={"code": code, "username": "dir",
                                            "password": PASSWORD})
    assert made.status_code == 200, text(made)
    body = made.get_json()
    assert body["user"]["role"] == "director" and body["csrf_token"] == browser.cookie(
        CSRF_COOKIE)
    assert browser.get("/api/me").get_json()["user"]["name"] == "dir"


@pytest.mark.slow
def test_serve_prints_the_setup_code_and_stops_cleanly(data_dir: Path) -> None:
    with real_server(data_dir) as server:
        code = server.wait_for_line(r"setup code: (\d{4}-\d{4}-\d{4})")[1]
        status, headers, body = server.request("GET", "/")
        assert status == 302
        status, headers, body = server.request("GET", "/setup")
        assert status == 200 and b'id="setup-form"' in body
        status, headers, body = server.json("POST", "/api/setup", {
            "code": code, "username": "directora", "password": PASSWORD})
        assert status == 200, body
        cookies = {c.split("=", 1)[0]: c.split(";", 1)[0].split("=", 1)[1]
                   for c in headers.get_all("Set-Cookie")}
        session = f"{SESSION_COOKIE}={cookies[SESSION_COOKIE]}"
        status, _, me = server.json("GET", "/api/me", headers={"Cookie": session})
        assert status == 200 and me["user"]["role"] == "director"
        status, _, body = server.request("GET", "/setup", headers={"Cookie": session})
        assert status == 302
        assert server.stop() == 0
        assert not port_open(server.port)
        assert "acopio stopped" in server.stderr()


# -- login, logout, password, sessions ---------------------------------------------------


def _set_cookies(response) -> dict[str, str]:
    """{name: the whole Set-Cookie header} of a response."""
    return {h.split("=", 1)[0]: h for h in response.headers.getlist("Set-Cookie")}


def test_login_and_logout_with_the_form(web: WebApp) -> None:
    web.user("ana", "photographer")
    browser = web.client()
    page = browser.get("/login")
    assert page.status_code == 200
    token = form_token(text(page))
    csrf_cookie = _set_cookies(page)[CSRF_COOKIE]
    assert "HttpOnly" not in csrf_cookie and "SameSite=Strict" in csrf_cookie

    wrong = browser.post("/login", data={"csrf_token": token, "username": "ana",
                                         "password": "no-es-la-clave"})
    assert wrong.status_code == 401
    assert "Usuario o contraseña incorrectos" in text(wrong)
    assert browser.session_id is None

    done = browser.post("/login?next=/archivo", data={"csrf_token": token, "username": "ana",
                                                      "password": PASSWORD})
    assert done.status_code == 302 and done.headers["Location"] == "/archivo"
    cookies = _set_cookies(done)
    assert "HttpOnly" in cookies[SESSION_COOKIE] and "SameSite=Lax" in cookies[SESSION_COOKIE]
    assert "Path=/" in cookies[SESSION_COOKIE]
    assert "HttpOnly" not in cookies[CSRF_COOKIE]  # the page's script reads it
    assert "SameSite=Strict" in cookies[CSRF_COOKIE]
    me = browser.get("/api/me").get_json()
    assert me["user"]["name"] == "ana" and me["user"]["role"] == "photographer"
    assert me["csrf_token"] == browser.cookie(CSRF_COOKIE) != token  # a fresh token
    assert "password" not in me["user"] and "epoch" not in me["user"]
    old = browser.session_id

    page = text(browser.get("/"))
    logout = browser.post("/logout", data={"csrf_token": form_token(page)})
    assert logout.status_code == 302 and logout.headers["Location"] == "/login"
    assert browser.session_id is None
    replay = web.client()
    replay.set_cookie(SESSION_COOKIE, old)
    assert replay.get("/api/items").status_code == 401
    assert replay.get("/").status_code == 302


def test_login_and_logout_with_json(web: WebApp) -> None:
    web.user("beto", "social")
    browser = web.client()
    wrong = browser.post("/api/login", json={"username": "beto", "password": "equivocada1"})
    assert wrong.status_code == 401 and wrong.get_json()["error"] == "login_failed"
    unknown = browser.post("/api/login", json={"username": "nadie", "password": PASSWORD})
    assert unknown.status_code == 401 and unknown.get_json() == wrong.get_json()
    bad = browser.post("/api/login", json={"username": ["beto"], "password": PASSWORD})
    assert bad.status_code == 400

    browser = web.login("beto")
    old = browser.session_id
    assert browser.get("/api/items").status_code == 200
    assert browser.post("/api/logout").status_code == 403  # no CSRF token
    out = browser.write("POST", "/api/logout")
    assert out.status_code == 200 and out.get_json() == {"ok": True}
    assert browser.session_id is None
    replay = web.client()
    replay.set_cookie(SESSION_COOKIE, old)
    assert replay.get("/api/items").status_code == 401
    assert replay.get("/api/me").status_code == 401


def test_password_change_needs_the_current_one_and_ends_other_sessions(web: WebApp) -> None:
    web.user("carla", "assistant")
    here, elsewhere = web.login("carla"), web.login("carla")
    new = "otra-clave-segura-2"

    wrong = here.write("POST", "/api/password", json={"current": "no-es-esta-1", "new": new})
    assert wrong.status_code == 400
    assert elsewhere.get("/api/items").status_code == 200  # nothing happened
    short = here.write("POST", "/api/password", json={"current": PASSWORD, "new": "corta"})
    assert short.status_code == 400 and "short" in short.get_json()["message"]

    changed = here.write("POST", "/api/password", json={"current": PASSWORD, "new": new})
    assert changed.status_code == 200, text(changed)
    assert elsewhere.get("/api/items").status_code == 401  # the other session ended
    assert here.get("/api/items").status_code == 200  # this one was re-issued
    here.csrf = here.cookie(CSRF_COOKIE) or ""
    assert here.get("/api/me").get_json()["csrf_token"] == here.csrf
    assert web.client().post("/api/login", json={"username": "carla",
                                                  "password": PASSWORD}).status_code == 401
    third = web.login("carla", new)

    # The same through the account page's form.
    page = third.get("/cuenta")
    assert page.status_code == 200 and 'id="password-form"' in text(page)
    token = form_token(text(page))
    refused = third.post("/cuenta", data={"csrf_token": token, "current": PASSWORD,
                                          "new": "tercera-clave-3"})
    assert refused.status_code == 400
    assert "La contraseña actual no es correcta" in text(refused)
    done = third.post("/cuenta", data={"csrf_token": token, "current": new,
                                       "new": "tercera-clave-3"})
    assert done.status_code == 200 and "Contraseña cambiada" in text(done)
    assert third.get("/api/items").status_code == 200
    assert here.get("/api/items").status_code == 401
    assert form_token(text(done)) == third.cookie(CSRF_COOKIE)  # the page carries the new one
    web.login("carla", "tercera-clave-3")


def test_sessions_end_when_idle_and_at_their_maximum_age(web: WebApp) -> None:
    """The app's Sessions rebuilt with a clock the test moves (same state file, same
    settings): hours pass in an instant."""
    now = [time.time()]
    old = web.ctx.sessions
    web.ctx.sessions = Sessions(web.ctx.data.state, web.ctx.users, idle_s=old.idle_s,
                                max_s=old.max_s, clock=lambda: now[0],
                                ticks=lambda: now[0])
    assert old.idle_s == 12 * 3600 and old.max_s == 72 * 3600  # the defaults
    web.user("dana", "designer")

    browser = web.login("dana")
    now[0] += old.idle_s - 120
    assert browser.get("/api/items").status_code == 200  # used: the idle clock restarts
    now[0] += old.idle_s - 120
    assert browser.get("/api/items").status_code == 200
    now[0] += old.idle_s + 1
    assert browser.get("/api/items").status_code == 401
    page = browser.get("/archivo")
    assert page.status_code == 302
    assert parse_qs(urlsplit(page.headers["Location"]).query)["expired"] == ["1"]
    assert "Su sesión terminó" in text(browser.get(page.headers["Location"]))

    busy = web.login("dana")
    started = now[0]
    while now[0] - started + old.idle_s * 0.9 <= old.max_s:
        now[0] += old.idle_s * 0.9
        assert busy.get("/api/items").status_code == 200
    now[0] += old.idle_s * 0.9  # past the maximum age, however busy
    assert busy.get("/api/items").status_code == 401


# -- users ---------------------------------------------------------------------------------


def test_director_manages_users_with_the_pages(web: WebApp) -> None:
    director = web.user_and_login("directora")
    page = director.get("/usuarios")
    assert page.status_code == 200 and 'id="add-user"' in text(page)
    token = form_token(text(page))
    assert token == director.csrf

    added = director.form("/usuarios", {"username": "emilio", "role": "designer",
                                        "password": PASSWORD})
    assert added.status_code == 200 and "Usuario emilio creado" in text(added)
    assert web.ctx.users.get("emilio").role == "designer"
    assert director.form("/usuarios", {"username": "x1", "role": "rey",
                                       "password": PASSWORD}).status_code == 400
    short = director.form("/usuarios", {"username": "fito", "role": "social",
                                        "password": "corta"})
    assert short.status_code == 400 and web.ctx.users.get("fito") is None
    twice = director.form("/usuarios", {"username": "emilio", "role": "social",
                                        "password": PASSWORD})
    assert twice.status_code == 400 and web.ctx.users.get("emilio").role == "designer"

    emilio = web.login("emilio")
    off = director.form("/usuarios/emilio/activo", {"disabled": "1"})
    assert off.status_code == 302 and off.headers["Location"] == "/usuarios"
    assert web.ctx.users.get("emilio").disabled
    assert emilio.get("/api/items").status_code == 401  # the session ended
    refused = web.client().post("/api/login", json={"username": "emilio",
                                                    "password": PASSWORD})
    assert refused.status_code == 401
    assert 'class="disabled"' in text(director.get("/usuarios"))
    on = director.form("/usuarios/emilio/activo", {"disabled": "0"})
    assert on.status_code == 302 and not web.ctx.users.get("emilio").disabled
    emilio = web.login("emilio")

    removed = director.form("/usuarios/emilio/eliminar")
    assert removed.status_code == 302 and web.ctx.users.get("emilio") is None
    assert emilio.get("/api/items").status_code == 401
    assert director.form("/usuarios/nadie/eliminar").status_code == 409

    # Nobody removes or disables themselves, so a director always remains.
    assert director.form("/usuarios/directora/eliminar").status_code == 409
    assert director.form("/usuarios/directora/activo", {"disabled": "1"}).status_code == 409
    assert web.ctx.users.get("directora") is not None
    assert not web.ctx.users.get("directora").disabled


def test_director_manages_users_through_the_api(web: WebApp) -> None:
    director = web.user_and_login("directora")
    listed = director.get("/api/users").get_json()["users"]
    assert [u["name"] for u in listed] == ["directora"]
    assert all("password" not in u for u in listed)

    made = director.write("POST", "/api/users", json={"username": "gabo", "role": "social",
                                                      "password": PASSWORD})
    assert made.status_code == 201 and made.get_json()["user"]["role"] == "social"
    for body in ({"username": "gabo", "role": "social", "password": PASSWORD},
                 {"username": "hugo", "role": "emperador", "password": PASSWORD},
                 {"username": "hugo", "role": "social", "password": "corta"},
                 {"username": "Hugo", "role": "social", "password": PASSWORD},
                 {"username": "hugo", "role": "social"}, ["hugo"]):
        refused = director.write("POST", "/api/users", json=body)
        assert refused.status_code == 400, body
        assert set(refused.get_json()) == {"error", "message"}
    assert [u.name for u in web.ctx.users.list()] == ["directora", "gabo"]

    gabo = web.login("gabo")
    assert director.write("DELETE", "/api/users/gabo").status_code == 200
    assert gabo.get("/api/items").status_code == 401
    assert director.write("DELETE", "/api/users/gabo").status_code == 404
    yourself = director.write("DELETE", "/api/users/directora")
    assert yourself.status_code == 409
    assert web.ctx.users.get("directora") is not None

    # The last enabled director cannot go, not even from the console's side.
    with pytest.raises(AccountError, match="last enabled director"):
        web.ctx.users.remove("directora")


# -- browsing a real archive ---------------------------------------------------------------


def test_recent_lists_the_newest_imports_first(archive: WebApp, library: Library) -> None:
    browser = archive.user_and_login("ana", "photographer")
    page = browser.get("/")
    body = text(page)
    assert '<html lang="es-MX">' in body and "Lo más reciente" in body
    shown = grid(page)
    newest_first = [i["sha256"] for i in sorted(library.items, key=lambda i: i["imported_at"],
                                                reverse=True)]
    assert shown == newest_first
    second = {library.sha[n] for n in SECOND_BATCH}
    assert set(shown[:len(SECOND_BATCH)]) == second  # the later card's items on top
    assert set(shown[len(SECOND_BATCH):]) == {library.sha[n] for n in FIRST_BATCH}
    for sha in shown:  # every cell shows its picture: thumbnail, poster or waveform
        assert re.search(rf'<img src="/media/{sha}/(thumb|poster|waveform)"', body), sha
    assert re.search(r'data-live="/api/items\?limit=\d+"', body)  # page 1 updates itself


def test_archive_by_month_and_activity(archive: WebApp, library: Library) -> None:
    browser = archive.user_and_login("ana", "photographer")
    months = text(browser.get("/archivo"))
    assert months.index("/archivo/2026-11") < months.index("/archivo/2003-12")  # newest first
    assert "Noviembre de 2026" in months and "Diciembre de 2003" in months
    assert "5 elementos" in months and "1 elemento<" in months  # singular for one

    month = browser.get("/archivo/2026-11")
    assert month.status_code == 200
    body = text(month)
    activity_href = "/archivo/2026-11/2026-11-10_sesion-de-cabildo"
    unsorted_href = "/archivo/2026-11/2026-11-10_sin-actividad"
    assert activity_href in body and unsorted_href in body
    assert "Sesión de Cabildo" in body and "Sin actividad" in body and "Gobierno" in body
    assert "4 elementos" in body

    folder = browser.get(activity_href)
    assert grid(folder) == [library.sha[n] for n in IN_ACTIVITY]  # capture order
    assert "<h1>Sesión de Cabildo</h1>" in text(folder)
    assert "10 de noviembre de 2026" in text(folder)
    assert grid(browser.get(unsorted_href)) == [library.sha["clip.mp4"]]

    for missing in ("/archivo/2026-10", "/archivo/2026-13", "/archivo/noviembre",
                    "/archivo/2026-11/2026-11-11_sin-actividad",
                    "/archivo/2026-11/2026-11-10_otra", "/archivo/2026-11/cualquier-cosa"):
        assert browser.get(missing).status_code == 404, missing


def test_item_pages_show_the_right_player_metadata_and_neighbours(
        archive: WebApp, library: Library) -> None:
    browser = archive.user_and_login("ana", "photographer")
    sha = library.sha

    photo = text(browser.get(f"/item/{sha['plaza.jpg']}"))
    assert f'<img src="/media/{sha["plaza.jpg"]}/preview"' in photo
    # the model repeats the make: said once, as the search's camera filter says it
    assert "Canon EOS R6" in photo and "Canon Canon" not in photo and "64 × 48" in photo
    assert "Sesión de Cabildo · Gobierno" in photo
    assert sha["plaza.jpg"] in photo and "archive/2026/11/2026-11-10_sesion-de-cabildo/plaza.jpg" \
        in photo
    assert f'href="/original/{sha["plaza.jpg"]}"' in photo

    gps = text(browser.get(f"/item/{sha['gps.jpg']}"))
    assert 'href="geo:19.4326,-99.1332"' in gps and 'class="locator"' in gps
    assert "19.4326, -99.1332" in gps
    assert "geo:" not in photo

    video = text(browser.get(f"/item/{sha['clip.mp4']}"))
    assert re.search(rf'<video id="player"[^>]* src="/media/{sha["clip.mp4"]}/proxy"', video)
    assert f'poster="/media/{sha["clip.mp4"]}/poster"' in video
    assert "Sin actividad" in video

    audio = text(browser.get(f"/item/{sha['entrevista.wav']}"))
    assert re.search(rf'<audio id="player"[^>]* src="/media/{sha["entrevista.wav"]}/proxy"',
                     audio)
    assert f'<img src="/media/{sha["entrevista.wav"]}/waveform"' in audio
    assert "0:01" in audio  # its duration

    order = [sha[n] for n in IN_ACTIVITY]
    for i, current in enumerate(order):
        page = text(browser.get(f"/item/{current}"))
        prev = re.search(r'id="prev" href="/item/([0-9a-f]{64})"', page)
        nxt = re.search(r'id="next" href="/item/([0-9a-f]{64})"', page)
        assert (prev[1] if prev else None) == (order[i - 1] if i else None)
        assert (nxt[1] if nxt else None) == (order[i + 1] if i + 1 < len(order) else None)

    assert browser.get("/item/" + "0" * 64).status_code == 404
    assert browser.get("/item/not-a-hash").status_code == 404
    assert browser.get("/item/" + sha["plaza.jpg"].upper()).status_code == 404


def test_search_by_text_kind_camera_dates_and_status(archive: WebApp, library: Library) -> None:
    browser = archive.user_and_login("ana", "photographer")
    sha = library.sha
    form = browser.get("/buscar")
    assert form.status_code == 200 and 'id="search-form"' in text(form)
    assert grid(form) == []  # nothing searched yet
    assert "Canon PowerShot S40" in text(form)  # the cameras on file are offered

    def found(query: str) -> set[str]:
        return set(grid(browser.get("/buscar?" + query)))

    assert found("q=plaza") == {sha["plaza.jpg"]}
    assert found("q=PLAZ") == {sha["plaza.jpg"]}  # prefix, any case
    assert found("q=sesion") == {sha[n] for n in IN_ACTIVITY}  # the agenda title, no accent
    assert found("q=Sesi%C3%B3n+cabildo") == {sha[n] for n in IN_ACTIVITY}
    assert found("kind=video") == {sha["clip.mp4"]}
    assert found("kind=audio") == {sha["entrevista.wav"]}
    assert found("camera=Canon+EOS+R5") == {sha["cabildo.jpg"]}
    assert found("camera=Canon+PowerShot+S40") == {sha["flower.jpg"]}
    assert found("from=2003-12-01&to=2003-12-31") == {sha["flower.jpg"]}
    assert found("from=2026-11-10&to=2026-11-10") == set(sha.values()) - {sha["flower.jpg"]}
    assert found("status=ok") == set(sha.values())
    assert found("status=problems") == set()
    assert found("q=plaza&kind=video") == set()
    assert found("area=Gobierno") == {sha[n] for n in IN_ACTIVITY}
    counted = text(browser.get("/buscar?kind=photo"))
    assert "4 resultados" in counted
    nothing = text(browser.get("/buscar?q=zzzz"))
    assert "0 resultados" in nothing and "Sin resultados." in nothing
    for bad in ("kind=gif", "status=roto", "from=2026-02-30", "to=ayer", "month=2026-13",
                "page=0", "page=x"):
        assert browser.get("/buscar?" + bad).status_code == 400, bad


def test_a_long_folder_is_crossed_in_a_few_taps() -> None:
    """A 2,000-photo day had 34 pages and only "Anteriores/Siguientes": the afternoon of a
    second day was 17 taps away on a phone. The pager links the quarters too."""
    from appliance.web.browse import page_numbers

    assert page_numbers(1, 34) == [1, 2, 3, None, 8, None, 17, None, 26, None, 34]
    assert page_numbers(17, 34) == [1, None, 8, None, 15, 16, 17, 18, 19, None, 26, None, 34]
    assert page_numbers(34, 34) == [1, None, 8, None, 17, None, 26, None, 32, 33, 34]
    assert page_numbers(2, 3) == [1, 2, 3] and page_numbers(1, 1) == [1]


def test_paging_links(library: Library, data_dir: Path) -> None:
    library.copy_to(data_dir)
    with web_app(data_dir, {"ACOPIO_WEB_PAGE_SIZE": "3"}) as small:
        browser = small.user_and_login("ana", "photographer")
        first = browser.get("/")
        links = pager_links(text(first))
        assert links == {"next": "/?page=2"} and "Página 1 de 2" in text(first)
        assert 'aria-current="page" href="/?page=1"' in text(first)
        assert '<a href="/?page=2" title="Página 2 de 2">2</a>' in text(first)
        second = browser.get(links["next"])
        assert pager_links(text(second)) == {"prev": "/?page=1"}
        assert "Página 2 de 2" in text(second)
        assert len(grid(first)) == 3 and len(grid(second)) == 3
        assert grid(first) + grid(second) == grid(browser.get("/?page=1")) + grid(second)
        assert set(grid(first)) | set(grid(second)) == set(library.sha.values())
        assert set(grid(first)) & set(grid(second)) == set()
        assert grid(browser.get("/?page=3")) == []

        # Search keeps its query in the pager's links.
        search = browser.get("/buscar?q=sesion&kind=")
        links = pager_links(text(search))
        assert set(links) == {"next"}
        target = urlsplit(links["next"])
        assert target.path == "/buscar"
        assert parse_qs(target.query) == {"q": ["sesion"], "page": ["2"]}
        rest = browser.get(links["next"])
        assert len(grid(search)) == 3 and len(grid(rest)) == 1  # 4 in the activity
        assert set(grid(search) + grid(rest)) == {library.sha[n] for n in IN_ACTIVITY}
        back = pager_links(text(rest))
        assert set(back) == {"prev"}
        assert parse_qs(urlsplit(back["prev"]).query) == {"q": ["sesion"], "page": ["1"]}

        # A folder pages in capture order.
        folder = "/archivo/2026-11/2026-11-10_sesion-de-cabildo"
        page1 = browser.get(folder)
        assert pager_links(text(page1)) == {"next": folder + "?page=2"}
        page2 = browser.get(folder + "?page=2")
        assert pager_links(text(page2)) == {"prev": folder + "?page=1"}
        assert grid(page1) + grid(page2) == [library.sha[n] for n in IN_ACTIVITY]

        api = browser.get("/api/items").get_json()
        assert api["limit"] == 3 and len(api["items"]) == 3 and api["total"] == 6


# -- the JSON API --------------------------------------------------------------------------


def test_api_items_have_the_fields_of_acopio_items_json(archive: WebApp) -> None:
    browser = archive.user_and_login("ana", "photographer")
    listed = run_cli("--data-dir", archive.data_dir, "items", "--json")
    assert listed.returncode == 0, listed.stderr.decode()
    cli = {i["sha256"]: i for i in json.loads(listed.stdout)}
    body = browser.get("/api/items?limit=500").get_json()
    assert body["total"] == len(cli) == len(body["items"]) == 6
    assert body["offset"] == 0 and body["limit"] == 500
    assert body["latest_import"] == max(i["imported_at"] for i in cli.values())
    for item in body["items"]:
        expected = cli[item["sha256"]]
        assert set(item) == set(expected) | {"urls", "evicted"}
        assert {k: item[k] for k in expected} == expected
        sha = item["sha256"]
        assert item["urls"]["page"] == f"/item/{sha}"
        assert item["urls"]["original"] == f"/original/{sha}"
        for name in expected["derivatives"]:
            assert item["urls"][name] == f"/media/{sha}/{name}"
            assert browser.get(item["urls"][name]).status_code == 200
    one = browser.get(f"/api/items/{sha}").get_json()
    assert {k: one[k] for k in cli[sha]} == cli[sha]
    assert set(one) == set(cli[sha]) | {"urls", "evicted", "previous", "next", "history"}


def test_api_items_filters_paging_and_refusals(archive: WebApp, library: Library) -> None:
    browser = archive.user_and_login("ana", "photographer")
    sha = library.sha

    def shas(query: str) -> list[str]:
        response = browser.get("/api/items?" + query)
        assert response.status_code == 200, text(response)
        return [i["sha256"] for i in response.get_json()["items"]]

    everything = shas("limit=500")
    assert shas("limit=2") == everything[:2]
    assert shas("limit=2&offset=2") == everything[2:4]
    assert shas("limit=10&offset=5") == everything[5:]
    assert shas("offset=6") == []
    paged = browser.get("/api/items?limit=2&offset=4").get_json()
    assert paged["total"] == 6 and paged["limit"] == 2 and paged["offset"] == 4
    assert set(shas("q=cabildo")) == {sha[n] for n in IN_ACTIVITY}  # name or agenda title
    assert shas("q=cabildo.jpg") == [sha["cabildo.jpg"]]
    assert shas("month=2003-12") == [sha["flower.jpg"]]
    assert set(shas("month=2026-11")) == set(sha.values()) - {sha["flower.jpg"]}
    assert set(shas("activity=sesion-de-cabildo")) == {sha[n] for n in IN_ACTIVITY}
    assert shas("activity=sin-actividad&month=2026-11") == [sha["clip.mp4"]]
    assert shas("kind=audio") == [sha["entrevista.wav"]]
    assert shas("activity=no-existe") == []

    for bad in ("limit=0", "limit=501", "limit=muchos", "offset=-1", "offset=1.5",
                "kind=gif", "status=x", "month=2026-13", "from=2026/11/10", "to=mañana"):
        refused = browser.get("/api/items?" + bad)
        assert refused.status_code == 400, bad
        assert refused.is_json and refused.get_json()["error"] == "bad_request", bad
        assert refused.get_json()["message"], bad

    one = browser.get(f"/api/items/{sha['cabildo.jpg']}").get_json()
    assert one["original_name"] == "cabildo.jpg"
    assert one["previous"] == sha["plaza.jpg"] and one["next"] == sha["entrevista.wav"]
    missing = browser.get("/api/items/" + "f" * 64)
    assert missing.status_code == 404 and missing.get_json()["error"] == "not_found"
    assert browser.get("/api/items/xyz").status_code == 404

    months = browser.get("/api/months").get_json()["months"]
    assert months == [{"month": "2026-11", "count": 5}, {"month": "2003-12", "count": 1}]
    folders = browser.get("/api/months/2026-11").get_json()["folders"]
    by_slug = {f["activity"]: f for f in folders}
    assert by_slug["sesion-de-cabildo"]["title"] == ACTIVITY.title
    assert by_slug["sesion-de-cabildo"]["count"] == 4
    assert by_slug["sin-actividad"]["count"] == 1
    assert browser.get("/api/months/2026-11-01").status_code == 404


def test_api_status(archive: WebApp, library: Library) -> None:
    browser = archive.user_and_login("ana", "photographer")
    status = browser.get("/api/status").get_json()
    assert {"devices", "jobs", "disk", "sync", "latest_import", "kit"} <= set(status)
    assert status["devices"] == [] and status["kit"] == "acopio"
    assert status["jobs"]["pending"] == 0 and status["jobs"]["running"] == 0
    assert status["jobs"]["done"] >= 10  # thumbnails, previews, proxies of 6 items
    disk = status["disk"]
    assert 0 < disk["free"] <= disk["total"] and disk["used"] <= disk["total"]
    assert disk["reserve"] >= 0
    assert status["sync"]["state"] == "not_configured" and status["sync"]["running"] is False
    assert status["sync"]["pending_items"] == 0 and status["sync"]["last_error"] is None
    assert status["latest_import"] == max(i["imported_at"] for i in library.items)
    page = text(browser.get("/estado"))
    assert "libre" in page or "free" in page


# -- caching -------------------------------------------------------------------------------


def test_derivatives_are_immutable_and_pages_answer_304(archive: WebApp,
                                                        library: Library) -> None:
    browser = archive.user_and_login("ana", "photographer")
    sha = library.sha
    for url, mimetype in ((f"/media/{sha['plaza.jpg']}/thumb", "image/jpeg"),
                          (f"/media/{sha['plaza.jpg']}/preview", "image/jpeg"),
                          (f"/media/{sha['clip.mp4']}/poster", "image/jpeg"),
                          (f"/media/{sha['clip.mp4']}/proxy", "video/mp4"),
                          (f"/media/{sha['entrevista.wav']}/waveform", "image/png"),
                          (f"/media/{sha['entrevista.wav']}/proxy", "audio/mp4")):
        got = browser.get(url)
        assert got.status_code == 200, url
        assert got.headers["Cache-Control"] == IMMUTABLE, url
        assert got.mimetype == mimetype, url
        assert got.headers.get("ETag"), url
        got.close()
    for missing in (f"/media/{sha['plaza.jpg']}/proxy", f"/media/{sha['plaza.jpg']}/original",
                    f"/media/{'0' * 64}/thumb"):
        assert browser.get(missing).status_code == 404, missing

    original = browser.get(f"/original/{sha['gps.jpg']}")
    assert original.status_code == 200
    assert original.headers["Cache-Control"] == IMMUTABLE
    assert "attachment" in original.headers["Content-Disposition"]
    assert "gps.jpg" in original.headers["Content-Disposition"]
    assert hashlib.sha256(original.get_data()).hexdigest() == sha["gps.jpg"]

    for url in ("/", "/archivo", f"/item/{sha['plaza.jpg']}", "/api/items", "/api/status",
                "/api/months", f"/api/items/{sha['plaza.jpg']}"):
        first = browser.get(url)
        etag = first.headers.get("ETag")
        assert first.status_code == 200 and etag, url
        assert "no-cache" in first.headers["Cache-Control"], url
        again = browser.get(url, headers={"If-None-Match": etag})
        assert again.status_code == 304 and again.get_data() == b"", url
        assert browser.get(url, headers={"If-None-Match": '"otro"'}).status_code == 200

    proxy = f"/media/{sha['clip.mp4']}/proxy"
    size = int(browser.get(proxy).headers["Content-Length"])
    part = browser.get(proxy, headers={"Range": "bytes=100-299"})
    assert part.status_code == 206
    assert part.headers["Content-Range"] == f"bytes 100-299/{size}"
    assert len(part.get_data()) == 200
    whole = browser.get(proxy).get_data()
    assert part.get_data() == whole[100:300]
    tail = browser.get(proxy, headers={"Range": "bytes=-10"})
    assert tail.status_code == 206 and tail.get_data() == whole[-10:]
    assert browser.get(proxy, headers={"Range": f"bytes={size + 10}-"}).status_code == 416


# -- live updates --------------------------------------------------------------------------


def test_new_imports_show_up_without_restarting(archive: WebApp, tmp_path: Path) -> None:
    browser = archive.user_and_login("ana", "photographer")
    before = browser.get("/api/items").get_json()
    assert before["total"] == 6
    card = tmp_path / "card3"
    exif_jpeg(card / "DCIM/nueva.jpg", "2026:11:12 12:00:00", "-06:00", color=(9, 9, 9))
    done = run_cli("--data-dir", archive.data_dir, "ingest", card)
    assert done.returncode == 0, done.stderr.decode()
    imported = time.monotonic()
    while True:
        now = browser.get("/api/items").get_json()
        if now["total"] == 7:
            break
        assert time.monotonic() - imported < 2.5, "the new item did not show up in time"
        time.sleep(0.1)
    assert now["items"][0]["original_name"] == "nueva.jpg"
    assert now["latest_import"] == now["items"][0]["imported_at"] > before["latest_import"]
    status = browser.get("/api/status").get_json()
    assert status["latest_import"] == now["latest_import"]
    assert grid(browser.get("/"))[0] == now["items"][0]["sha256"]
    assert "/archivo/2026-11" in text(browser.get("/archivo"))
    assert "2026-11-12_sin-actividad" in text(browser.get("/archivo/2026-11"))


# -- languages -----------------------------------------------------------------------------


def test_spanish_by_default_english_on_request(archive: WebApp) -> None:
    archive.user("ana", "photographer")
    anonymous = archive.client()
    login = text(anonymous.get("/login"))
    assert '<html lang="es-MX">' in login and "Iniciar sesión" in login
    token = form_token(login)
    switched = anonymous.post("/idioma", data={"csrf_token": token, "language": "en",
                                               "next": "/login"})
    assert switched.status_code == 302 and switched.headers["Location"] == "/login"
    assert anonymous.cookie("acopio_lang") == "en"
    assert '<html lang="en">' in text(anonymous.get("/login"))
    assert anonymous.post("/idioma", data={"csrf_token": token,
                                           "language": "fr"}).status_code == 400

    browser = archive.login("ana")
    spanish = text(browser.get("/archivo"))
    assert '<html lang="es-MX">' in spanish and "Noviembre de 2026" in spanish
    assert "Lo más reciente" in spanish and "Archivo" in spanish
    assert "10 de noviembre de 2026" in text(browser.get(
        "/archivo/2026-11/2026-11-10_sesion-de-cabildo"))
    switched = browser.form("/idioma", {"language": "en", "next": "/archivo"})
    assert switched.status_code == 302 and switched.headers["Location"] == "/archivo"
    english = text(browser.get("/archivo"))
    assert '<html lang="en">' in english and "November 2026" in english
    assert "Latest" in english and "noviembre" not in english.lower()
    assert "November 10, 2026" in text(browser.get(
        "/archivo/2026-11/2026-11-10_sesion-de-cabildo"))
    assert archive.ctx.users.get("ana").language == "en"  # kept with the user

    elsewhere = archive.login("ana")  # another browser: no cookie, still English
    assert elsewhere.cookie("acopio_lang") is None
    assert '<html lang="en">' in text(elsewhere.get("/"))
    assert browser.form("/idioma", {"language": "es-MX"}).status_code == 302
    assert '<html lang="es-MX">' in text(elsewhere.get("/"))


def _fields(template: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(template) if name}


def test_every_message_exists_in_both_languages() -> None:
    assert set(MESSAGES) == set(LANGUAGES)
    spanish, english = MESSAGES["es-MX"], MESSAGES["en"]
    assert set(spanish) == set(english), set(spanish) ^ set(english)
    for key in spanish:
        assert spanish[key].strip() and english[key].strip(), key
        assert _fields(spanish[key]) == _fields(english[key]), key


def test_every_key_the_templates_and_script_use_exists() -> None:
    used: dict[str, str] = {}
    for template in TEMPLATES.glob("*.html"):
        source = template.read_text()
        # t("key") and t("key", n=...), not t("prefix." ~ value)
        for key in re.findall(r"""\bt\(\s*["']([^"']+)["']\s*[,)]""", source):
            used[key] = template.name
        # t.count("key", n): the key, and its ".one" form when the catalogue has one
        for key in re.findall(r"""\bt\.count\(\s*["']([^"']+)["']\s*,""", source):
            used[key] = template.name
            if key + ".one" in MESSAGES["es-MX"] or key + ".one" in MESSAGES["en"]:
                used[key + ".one"] = template.name
    assert len(used) > 80  # the regex finds them
    script = (REPO / "appliance/web/static/app.js").read_text()
    for key in re.findall(r"""messages\[["']([^"']+)["']\]""", script):
        used[key] = "app.js"
    # The keys templates build from values.
    families = {
        "kind.": browse.KINDS, "role.": ROLES, "lang.": LANGUAGES,
        "search.status.": browse.STATUSES, "status.sync.": (*SYNC_STATES, "stopped"),
        "error.": ("400", "403", "404", "405", "409", "413", "429", "500"),
    }
    for prefix, values in families.items():
        for value in values:
            used[prefix + value] = "built"
    for language in LANGUAGES:
        missing = {k: where for k, where in used.items() if k not in MESSAGES[language]}
        assert not missing, (language, missing)


# -- the record button's API ---------------------------------------------------------------


def test_record_api_refusals(web: WebApp) -> None:
    director = web.user_and_login("directora")
    designer = web.user_and_login("diseno", "designer")
    url = "/api/devices/mic-usb-1/record"
    assert director.write("POST", url, json={"action": "start"}).status_code == 404
    assert director.write("POST", url, json={"action": "stop"}).status_code == 404
    for body in ({"action": "explode"}, {}, ["start"], {"action": None}):
        refused = director.write("POST", url, json=body)
        assert refused.status_code == 400, body
        assert refused.get_json()["error"] == "bad_request"
    assert director.write("POST", url, data="start").status_code == 400
    assert designer.write("POST", url, json={"action": "start"}).status_code == 403
    assert director.post(url, json={"action": "start"}).status_code == 403  # no CSRF token
    assert web.client().post(url, json={"action": "start"}).status_code == 401



def test_every_error_page_the_ui_can_show_is_translated(web: WebApp) -> None:
    """An anonymous visitor of an unknown page gets a 401 page in Spanish, not werkzeug's
    English name; and every status the web code aborts with has a message in each language."""
    anonymous = web.client()
    page = anonymous.get("/no-existe")
    assert page.status_code == 401
    assert "Inicie sesión para continuar" in text(page) and "Unauthorized" not in text(page)
    source = "\n".join(p.read_text() for folder in ("appliance/web", "sync/hub")
                       for p in (REPO / folder).rglob("*.py"))
    codes = set(re.findall(r"abort\((\d{3})", source)) | {"401", "404", "405", "500"}
    for language in MESSAGES:
        missing = sorted(c for c in codes if f"error.{c}" not in MESSAGES[language])
        assert not missing, (language, missing)


def test_a_name_that_is_not_utf8_shows_on_every_page(tmp_path: Path, data_dir: Path) -> None:
    """A card from an old camera or a Windows share can name a file in Latin-1. The catalog
    keeps its bytes (surrogate escapes); a page that printed them raw was a 500 for every
    user, from the home page on, until the item left page one."""
    card = tmp_path / "card"
    exif_jpeg(card / "a.jpg", "2026:11:25 10:00:00", color=(9, 9, 9))
    os.rename(card / "a.jpg", os.fsencode(card) + b"/Fotograf\xeda A\xf1o.jpg")
    assert run_cli("--data-dir", data_dir, "ingest", card).returncode == 0
    [record] = json.loads(run_cli("--data-dir", data_dir, "items", "--json").stdout)
    sha = record["sha256"]
    with web_app(data_dir) as app:
        browser = app.user_and_login("ana", "director")
        folder = "/archivo/2026-11/2026-11-25_sin-actividad"
        for url in ("/", "/buscar?q=a", folder, f"/item/{sha}"):
            page = browser.get(url)
            assert page.status_code == 200, url
        assert "Fotografía Año.jpg" in text(browser.get(f"/item/{sha}"))


def test_a_card_seen_before_shows_its_progress_whole(web: WebApp) -> None:
    """A card imported before is all duplicates: the status said "0 de 10" with an empty
    bar, while `acopio devices` said 10/10."""
    from ingest.devices.state import Device, DeviceStates

    DeviceStates(web.ctx.data.state).put(Device(
        id="sdb1", kind="card", status="safe_to_remove", name="EOS_DIGITAL", total=10,
        verified=3, duplicates=7))
    browser = web.user_and_login("ana", "photographer")
    [device] = browser.get("/api/status").get_json()["devices"]
    assert device["done"] == 10 and device["verified"] == 3
    page = text(browser.get("/estado"))
    assert "10 de 10" in page and '<progress max="10" value="10">' in page


def test_the_sync_error_is_said_in_spanish_with_its_detail(web: WebApp) -> None:
    """The status showed the sync role's last error as it was logged, in English."""
    from sync.kit import credentials
    from sync.kit.status import StatusWriter

    credentials.save(web.ctx.data, credentials.Credentials(
        hub_url="http://127.0.0.1:9", kit="acopio", token="t" * 43,
        paired_at="2026-11-26T10:00:00+00:00", hub="central"))
    writer = StatusWriter(web.ctx.data, hub="http://127.0.0.1:9")
    writer.update(pending_items=1, pending_bytes=2048, force=True)
    writer.error("archive/x/IMG_0001.JPG: 1000 bytes on disk, 2048 catalogued",
                 code="originals")
    browser = web.user_and_login("ana", "photographer")
    page = text(browser.get("/estado"))
    assert MESSAGES["es-MX"]["status.sync.error.originals"] in page
    assert "1 pendiente (" in page and "1 pendientes" not in page
    assert "IMG_0001.JPG: 1000 bytes on disk" in page  # the detail, for whoever mends it
    assert browser.get("/api/status").get_json()["sync"]["last_error"]["code"] == "originals"
    from sync.kit.status import ERROR_CODES

    for language in MESSAGES:  # every code the sync role writes is said in each language
        assert all(f"status.sync.error.{code}" in MESSAGES[language] for code in ERROR_CODES)
