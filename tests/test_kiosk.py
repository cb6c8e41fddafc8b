"""The kiosk screen (issue 8), without a browser: the public routes (`/mural`, `/api/mural`,
`/mural/media/…`, `/mural/logo.png`) on a real small archive (imported and derived with the
real CLI, approved through appliance.editorial), the settings page for Dirección only, its
checks and the logo upload, the slide planning, and `acopio kiosk`: the Chromium command line,
the wait for the web UI and the exec into the browser, for real. The screen itself, in
Chromium, is tests/test_browser_kiosk.py.
"""

from __future__ import annotations

import io
import json
import os
import re
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date, datetime
from html import escape
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from appliance import config as config_mod
from appliance import kiosk
from appliance.accounts import ROLES
from appliance.datadir import DataDir
from appliance.editorial import Editor
from appliance.kiosk import Group, KioskError, KioskSettings, KioskStore
from appliance.web.i18n import MESSAGES, Translator
from appliance.web.security import PUBLIC_ENDPOINTS, SESSION_COOKIE
from tests.conftest import REPO, TEST_ENV
from tests.webclient import Library, WebApp, build_library, real_server, web_app

ES = MESSAGES["es-MX"]
MONTH = "2026-11"  # the library's activity month (tests/webclient.py)
# Approved in every test: two photos of the activity, the afternoon video (in no activity),
# the interview (audio: never on the screen) and the 2003 sample (another month).
APPROVED = ("plaza.jpg", "cabildo.jpg", "clip.mp4", "entrevista.wav", "flower.jpg")
ON_SCREEN = {"plaza.jpg", "cabildo.jpg", "clip.mp4"}  # of MONTH: photos and the video
NOT_APPROVED = "gps.jpg"
KIOSK_PUBLIC = {"kiosk.mural", "kiosk.api_mural", "kiosk.media", "kiosk.logo"}


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    return build_library(tmp_path_factory.mktemp("kiosk-library"))


@pytest.fixture
def web(library: Library, data_dir: Path) -> Iterator[WebApp]:
    library.copy_to(data_dir)
    data = DataDir.at(data_dir)
    Editor(data).approve([library.sha[name] for name in APPROVED], by="directora")
    KioskStore(data).save({"period": "month", "month": MONTH})
    with web_app(data_dir) as built:
        built.user("directora")
        yield built


def mural(client: Any) -> dict[str, Any]:
    response = client.get("/api/mural")
    assert response.status_code == 200, response.get_data(as_text=True)
    return response.get_json()


def shown(body: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["sha256"]: item for slide in body["slides"] for item in slide["items"]}


def names(library: Library, shas: Any) -> set[str]:
    by_sha = {sha: name for name, sha in library.sha.items()}
    return {by_sha[sha] for sha in shas}


def fresh(web: WebApp, client: Any, condition: Any, timeout: float = 5.0) -> dict[str, Any]:
    """/api/mural once `condition(body)` holds (the answer is rebuilt at most every second
    and the query index refreshes itself at most every second)."""
    deadline = time.monotonic() + timeout
    while True:
        body = mural(client)
        if condition(body):
            return body
        if time.monotonic() > deadline:
            raise AssertionError(f"/api/mural never satisfied the condition: {body}")
        time.sleep(0.1)


class Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def tags_of(html: str) -> list[tuple[str, dict[str, str | None]]]:
    parser = Tags()
    parser.feed(html)
    return parser.tags


# -- the public screen ----------------------------------------------------------------------


def test_the_screen_needs_no_login_and_shows_only_approved_items(web: WebApp,
                                                                 library: Library) -> None:
    anonymous = web.client()
    page = anonymous.get("/mural")
    assert page.status_code == 200
    assert SESSION_COOKIE not in page.headers.get("Set-Cookie", "")
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert page.headers["X-Frame-Options"] == "DENY"
    html = page.get_data(as_text=True)
    # It links nowhere and has no form; its only script and style are its own files.
    tags = tags_of(html)
    assert not [t for t, _ in tags if t in ("a", "form", "input", "button", "iframe")]
    assert [a.get("src") for t, a in tags if t == "script"] == ["/static/mural.js"]
    assert [a.get("href") for t, a in tags if t == "link" and a.get("rel") == "stylesheet"] \
        == ["/static/mural.css"]
    assert "<script>" not in html and " style=" not in html and "<style" not in html
    assert "noviembre de 2026" in html  # the period, in Spanish by default

    body = mural(anonymous)
    items = shown(body)
    assert names(library, items) == ON_SCREEN
    assert body["count"] == len(ON_SCREEN)
    assert body["period"] == "noviembre de 2026"
    # Grouped by archive folder: the activity (area, title, date) and the day's unsorted video.
    by_title = {s["title"]: s for s in body["slides"]}
    assert set(by_title) == {"Sesión de Cabildo", ""}
    cabildo = by_title["Sesión de Cabildo"]
    assert cabildo["area"] == "Gobierno" and cabildo["date"] == "10 de noviembre de 2026"
    assert names(library, [i["sha256"] for i in cabildo["items"]]) == {"plaza.jpg",
                                                                      "cabildo.jpg"}
    video = items[library.sha["clip.mp4"]]
    assert video["kind"] == "video" and video["video"].endswith("/proxy")
    assert by_title[""]["items"] == [video]  # a video has a slide of its own
    for item in items.values():
        urls = [u for u in (item["image"], item["video"]) if u]
        assert urls and all(u.startswith(f"/mural/media/{item['sha256']}/") for u in urls)
        for url in urls:
            got = anonymous.get(url)
            assert got.status_code == 200, url
            assert got.headers["Cache-Control"] == "private, max-age=300"
            assert got.mimetype in ("image/jpeg", "video/mp4"), url
    # The proxy answers Range requests (a video element asks for them).
    part = anonymous.get(video["video"], headers={"Range": "bytes=0-99"})
    assert part.status_code == 206 and len(part.data) == 100
    # The JSON carries no session, no staff URL, no path on disk.
    text = json.dumps(body)
    assert "/media/" not in text.replace("/mural/media/", "")
    assert "/original/" not in text and "archive" not in text and "derivatives" not in text


def test_the_answer_has_an_etag_and_answers_304_when_unchanged(web: WebApp) -> None:
    anonymous = web.client()
    first = anonymous.get("/api/mural")
    etag = first.headers["ETag"]
    again = anonymous.get("/api/mural", headers={"If-None-Match": etag})
    assert again.status_code == 304
    # A changed setting changes the answer (and its ETag).
    KioskStore(web.ctx.data).save({"interval_s": 7})
    changed = fresh(web, anonymous, lambda b: b["settings"]["interval_s"] == 7)
    assert changed["slides"][0]["duration_s"] == 7.0
    assert anonymous.get("/api/mural", headers={"If-None-Match": etag}).status_code == 200


def test_media_only_for_items_approved_right_now(web: WebApp, library: Library) -> None:
    anonymous = web.client()
    director = web.login("directora")
    plaza, gps = library.sha["plaza.jpg"], library.sha[NOT_APPROVED]
    assert anonymous.get(f"/mural/media/{plaza}/preview").status_code == 200
    assert anonymous.get(f"/mural/media/{plaza}/thumb").status_code == 200
    # Not approved, audio, a derivative the kiosk never serves, a made-up or bad hash: 404.
    wav = library.sha["entrevista.wav"]
    for url in (f"/mural/media/{gps}/preview", f"/mural/media/{gps}/thumb",
                f"/mural/media/{wav}/proxy", f"/mural/media/{wav}/waveform",
                f"/mural/media/{plaza}/original", f"/mural/media/{plaza}/waveform",
                f"/mural/media/{'0' * 64}/preview", f"/mural/media/{plaza.upper()}/preview"):
        assert anonymous.get(url).status_code == 404, url
    # Paths that try to climb out match no route at all (refused like any unknown path).
    for url in (f"/mural/media/{plaza}/..%2f..%2fstate%2fusers.json",
                "/mural/media/../../state/users.json", "/mural/../state/kiosk.json"):
        climbed = anonymous.get(url)
        assert climbed.status_code in (401, 404), url
        assert b"scrypt" not in climbed.data and b"settings" not in climbed.data, url
    # The staff's routes stay closed.
    assert anonymous.get(f"/media/{plaza}/preview").status_code == 302
    assert anonymous.get(f"/original/{plaza}").status_code == 302

    # Withdrawn through the UI's API: gone from the screen's media at once.
    assert director.write("POST", f"/api/items/{plaza}/withdraw").status_code == 200
    assert anonymous.get(f"/mural/media/{plaza}/preview").status_code == 404
    body = fresh(web, anonymous, lambda b: plaza not in shown(b))
    assert names(library, shown(body)) == ON_SCREEN - {"plaza.jpg"}
    # Approved by another process (the CLI, a sync): on the screen within seconds.
    Editor(DataDir.at(web.data_dir)).approve([gps], by="directora")
    body = fresh(web, anonymous, lambda b: gps in shown(b))
    assert anonymous.get(f"/mural/media/{gps}/preview").status_code == 200
    # ... and withdrawn by another process: its media 404 within the index's refresh.
    Editor(DataDir.at(web.data_dir)).withdraw([gps], by="directora")
    deadline = time.monotonic() + 3
    while anonymous.get(f"/mural/media/{gps}/preview").status_code != 404:
        assert time.monotonic() < deadline, "a withdrawn item's preview was still served"
        time.sleep(0.05)


def test_only_the_screen_is_public(web: WebApp, library: Library) -> None:
    """Nothing but the screen's four routes (and the login pages) answers without a login:
    tests/test_web_security.py tries every route; here, what the kiosk adds."""
    assert KIOSK_PUBLIC <= PUBLIC_ENDPOINTS
    kiosk_endpoints = {r.endpoint for r in web.app.url_map.iter_rules()
                       if r.endpoint.startswith("kiosk.")}
    assert kiosk_endpoints - KIOSK_PUBLIC == {"kiosk.settings", "kiosk.save_settings"}
    anonymous = web.client()
    settings = anonymous.get("/mural/ajustes")
    assert settings.status_code == 302 and "/login" in settings.headers["Location"]
    assert anonymous.post("/mural/ajustes", data={"interval_s": "2"}).status_code in (401, 403)
    assert anonymous.get("/api/items").status_code == 401
    assert anonymous.get("/").status_code == 302
    # A POST to the screen's routes is not a way in either.
    for url in ("/mural", "/api/mural", "/mural/logo.png"):
        assert anonymous.post(url).status_code in (401, 403, 405), url


# -- the settings page ------------------------------------------------------------------------


def test_settings_are_for_the_director_only(web: WebApp) -> None:
    store = KioskStore(web.ctx.data)
    before = store.load()
    for role in ROLES:
        if role == "director":
            continue
        browser = web.user_and_login(f"u-{role}", role)
        assert browser.get("/mural/ajustes").status_code == 403, role
        refused = browser.form("/mural/ajustes", {"interval_s": "3", "background": "#000000"})
        assert refused.status_code == 403, role
        assert ES["nav.kiosk"] not in browser.get("/").get_data(as_text=True), role
    assert store.load() == before
    director = web.login("directora")
    page = director.get("/mural/ajustes")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    assert ES["kiosk.title"] in html and 'href="/mural"' in html
    assert ES["nav.kiosk"] in director.get("/").get_data(as_text=True)  # in the menu
    # Without the page's CSRF token: refused.
    assert director.post("/mural/ajustes", data={"interval_s": "3"}).status_code == 403
    assert store.load() == before


def test_settings_are_checked_and_kept(web: WebApp, library: Library) -> None:
    director = web.login("directora")
    store = KioskStore(web.ctx.data)
    before = store.load()
    bad = [({"background": "rojo"}, "background", "colour"),
           ({"accent": "#12345"}, "accent", "colour"),
           ({"text": "#GGGGGG"}, "text", "colour"),
           ({"interval_s": "0"}, "interval_s", "interval"),
           ({"interval_s": "diez"}, "interval_s", "interval"),
           ({"layout": "carrusel"}, "layout", "layout"),
           ({"period": "siempre"}, "period", "period"),
           ({"period": "month", "month": "2026-13"}, "month", "month"),
           ({"period": "range", "date_from": "2026-11-20", "date_to": "2026-11-01"},
            "date_to", "range_order"),
           ({"period": "range", "date_from": "2026-11-01", "date_to": ""}, "date_from", "date"),
           ({"ticker": "\n".join(f"aviso {n}" for n in range(11))}, "ticker", "ticker_count"),
           ({"ticker": "x" * 141}, "ticker", "ticker_length")]
    for form, field, code in bad:
        response = director.form("/mural/ajustes", {**form, "interval_s":
                                                    form.get("interval_s", "9")})
        assert response.status_code == 400, form
        html = response.get_data(as_text=True)
        message = ES["kiosk.invalid"].format(field=ES[f"kiosk.field.{field}"],
                                             detail=ES[f"kiosk.error.{code}"])
        assert escape(message) in html, (form, message)
        assert store.load() == before, form  # nothing saved, not even the valid fields
    # What was typed stays in the form.
    kept = director.form("/mural/ajustes", {"background": "#123456", "ticker": "Hola",
                                            "interval_s": "0"})
    html = kept.get_data(as_text=True)
    assert 'value="#123456"' in html and ">Hola</textarea>" in html

    saved = director.form("/mural/ajustes", {
        "period": "month", "month": MONTH, "interval_s": "4", "layout": "grid",
        "background": "#0A0B0C", "text": "#fefefe", "accent": "#c8102e",
        "areas_sent": "1", "areas": "Gobierno",
        "ticker": "Informe de gobierno: domingo 10:00\n\n  Feria del libro   en la plaza "})
    assert saved.status_code == 303
    assert saved.headers["Location"].endswith("/mural/ajustes?guardado=1")
    assert ES["kiosk.saved"] in director.get("/mural/ajustes?guardado=1").get_data(as_text=True)
    settings = store.load()
    assert settings == KioskSettings(
        period="month", month=MONTH, interval_s=4, layout="grid", background="#0a0b0c",
        text="#fefefe", accent="#c8102e", areas=("Gobierno",),
        ticker=("Informe de gobierno: domingo 10:00", "Feria del libro en la plaza"))
    # Durable: another process, another app, reads the same.
    with web_app(web.data_dir) as other:
        body = mural(other.client())
    assert body["settings"] == {
        "interval_s": 4, "layout": "grid",
        "colours": {"background": "#0a0b0c", "text": "#fefefe", "accent": "#c8102e"},
        "logo": None, "ticker": ["Informe de gobierno: domingo 10:00",
                                 "Feria del libro en la plaza"]}
    # Only the area asked for: the activity's photos, not the unsorted video.
    assert names(library, shown(body)) == {"plaza.jpg", "cabildo.jpg"}
    # A form without the areas marker leaves them; one with it and none ticked: every area.
    director.form("/mural/ajustes", {"interval_s": "5"})
    assert store.load().areas == ("Gobierno",)
    director.form("/mural/ajustes", {"interval_s": "5", "areas_sent": "1"})
    assert store.load().areas == ()


def test_period_range_and_current_month(web: WebApp, library: Library) -> None:
    anonymous = web.client()
    store = KioskStore(web.ctx.data)
    store.save({"period": "range", "date_from": "2003-01-01", "date_to": "2003-12-31"})
    body = fresh(web, anonymous, lambda b: b["period"] != "noviembre de 2026")
    assert names(library, shown(body)) == {"flower.jpg"}
    assert body["period"] == "1 de enero de 2003 – 31 de diciembre de 2003"
    # The current month follows the kit's calendar.
    settings = KioskSettings()
    assert kiosk.period_of(settings, date(2026, 5, 31)) == kiosk.Period(month="2026-05")
    assert kiosk.period_of(settings, date(2027, 1, 1)) == kiosk.Period(month="2027-01")
    assert kiosk.period_of(KioskSettings(period="range", date_from="2026-05-01",
                                         date_to="2026-05-09"), date(2030, 1, 1)) == \
        kiosk.Period(date_from=date(2026, 5, 1), date_to=date(2026, 5, 9))
    store.save({"period": "current"})
    today = datetime.now(web.ctx.config.zone).date()
    body = fresh(web, anonymous, lambda b: "2003" not in b["period"])
    assert body["period"] == Translator("es-MX", web.ctx.config.zone).month(
        today.strftime("%Y-%m"))
    expected = set(ON_SCREEN) if today.strftime("%Y-%m") == MONTH else set()
    assert names(library, shown(body)) == expected


def _png(size: tuple[int, int] = (300, 120), mode: str = "RGBA") -> bytes:
    out = io.BytesIO()
    Image.new(mode, size, (200, 16, 46, 255) if mode == "RGBA" else 120).save(out, "PNG")
    return out.getvalue()


def _rotated_jpeg() -> bytes:
    """A 400x100 JPEG whose EXIF says "rotate 90° clockwise" (orientation 6)."""
    out = io.BytesIO()
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (400, 100), (20, 80, 160)).save(out, "JPEG", exif=exif)
    return out.getvalue()


def test_logo_upload_is_checked_and_re_encoded(web: WebApp) -> None:
    director = web.login("directora")
    anonymous = web.client()
    store = KioskStore(web.ctx.data)

    def upload(data: bytes, name: str = "logo.png", **form: str) -> Any:
        return director.post("/mural/ajustes", content_type="multipart/form-data", data={
            "csrf_token": director.csrf, "interval_s": "10", **form,
            "logo": (io.BytesIO(data), name)})

    png = _png()
    refused = {
        b"<svg xmlns='http://www.w3.org/2000/svg'/>": "logo_format",  # not PNG or JPEG
        b"hola, esto no es una imagen": "logo_format",
        png[: len(png) // 2]: "logo_format",  # cut short
        _gif(): "logo_format",
        _png((9000, 10), "L"): "logo_size",
    }
    for data, code in refused.items():
        response = upload(data)
        assert response.status_code == 400, data[:40]
        assert ES[f"kiosk.error.{code}"] in response.get_data(as_text=True), data[:40]
        assert store.load().logo == "" and not store.logo_path.exists()
    assert anonymous.get("/mural/logo.png").status_code == 404
    # Larger than a request may be: 413 before anything is read into a setting.
    huge = upload(os.urandom(1024 * 1024 + 10))
    assert huge.status_code == 413
    assert store.load().logo == ""

    # A JPEG: stored upright as a PNG, and public.
    assert upload(_rotated_jpeg(), "escudo.jpg").status_code == 303
    settings = store.load()
    assert re.fullmatch(r"[0-9a-f]{16}", settings.logo)
    with Image.open(store.logo_path) as stored:
        assert stored.format == "PNG" and stored.size == (100, 400)  # turned upright
    body = mural(anonymous)
    assert body["settings"]["logo"] == f"/mural/logo.png?v={settings.logo}"
    got = anonymous.get(body["settings"]["logo"])
    assert got.status_code == 200 and got.mimetype == "image/png"
    assert got.data == store.logo_path.read_bytes()
    assert 'src="/mural/logo.png?v=' in director.get("/mural/ajustes").get_data(as_text=True)
    # A large PNG is shrunk to fit 1024 px; a new logo is a new version.
    assert upload(_png((2048, 512))).status_code == 303
    with Image.open(store.logo_path) as stored:
        assert stored.size == (1024, 256)
    assert store.load().logo != settings.logo
    # A bad logo with good settings: nothing of the post is saved.
    assert upload(b"no", interval_s="3").status_code == 400
    assert store.load().interval_s == 10
    # Removed.
    assert director.form("/mural/ajustes", {"logo_remove": "1"}).status_code == 303
    assert store.load().logo == "" and not store.logo_path.exists()
    assert anonymous.get("/mural/logo.png").status_code == 404
    assert mural(anonymous)["settings"]["logo"] is None


def _gif() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (10, 10)).save(out, "GIF")
    return out.getvalue()


HOSTILE = ('<script>alert("aviso")</script> Feria & "Cultura"',
           "\"><img src=x onerror=alert(1)> ñandú")


def test_ticker_messages_are_escaped_everywhere(web: WebApp) -> None:
    director = web.login("directora")
    assert director.form("/mural/ajustes", {"ticker": "\n".join(HOSTILE)}).status_code == 303
    anonymous = web.client()
    html = anonymous.get("/mural").get_data(as_text=True)
    settings_html = director.get("/mural/ajustes").get_data(as_text=True)
    for page in (html, settings_html):
        assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;aviso&#34;)&lt;/script&gt; Feria &amp; &#34;Cultura&#34;" \
        in html
    assert [a for t, a in tags_of(html) if t == "img"] == [
        {"id": "mural-logo", "class": "mural-logo", "alt": "", "hidden": None}]
    # The JSON carries the text as it was typed; the screen's script inserts it as text.
    body = fresh(web, anonymous, lambda b: b["settings"]["ticker"] == list(HOSTILE))
    assert body["settings"]["ticker"] == list(HOSTILE)
    script = (REPO / "appliance/web/static/mural.js").read_text()
    assert "innerHTML" not in script and "insertAdjacentHTML" not in script
    assert "document.write" not in script and "eval(" not in script


def test_damaged_settings_never_stop_the_screen(web: WebApp, library: Library) -> None:
    store = KioskStore(web.ctx.data)
    store.path.write_bytes(b"\x00" * 64)
    anonymous = web.client()
    assert anonymous.get("/mural").status_code == 200
    body = mural(anonymous)
    assert body["settings"]["interval_s"] == KioskSettings().interval_s  # the defaults
    # Values that are no longer valid (a hand edit): each falls back on its own.
    store.path.write_text(json.dumps({"settings": {"1": {
        "background": "red", "interval_s": 99999, "layout": "grid", "ticker": ["hola"],
        "period": "month", "month": MONTH}}}))
    assert store.load() == KioskSettings(layout="grid", ticker=("hola",), period="month",
                                         month=MONTH)
    # Saving replaces a damaged file (kept aside).
    store.path.write_bytes(b"")
    director = web.login("directora")
    assert director.form("/mural/ajustes", {"interval_s": "6"}).status_code == 303
    assert store.load().interval_s == 6
    assert list(store.path.parent.glob("kiosk.json.damaged-*"))


# -- slides -----------------------------------------------------------------------------------


def _items(kind: str, count: int, start: int = 0) -> list[dict[str, Any]]:
    return [{"sha256": f"{start + n:064x}", "kind": kind} for n in range(count)]


@pytest.mark.parametrize(("layout", "photos", "sizes"), [
    ("collage", 5, [5]), ("collage", 6, [3, 3]), ("collage", 11, [4, 4, 3]),
    ("collage", 1, [1]), ("grid", 7, [4, 3]), ("grid", 12, [6, 6]), ("single", 3, [1, 1, 1]),
])
def test_photos_make_balanced_collages(layout: str, photos: int, sizes: list[int]) -> None:
    group = Group(key="2026/11/x", title="T", area="A", date="D", order=(0,),
                  items=_items("photo", photos))
    slides = kiosk.plan_slides([group], KioskSettings(layout=layout, interval_s=8))
    assert [len(s["items"]) for s in slides] == sizes
    assert [i for s in slides for i in s["items"]] == group.items  # capture order kept
    assert all(s["duration_s"] == 8 and s["title"] == "T" for s in slides)
    assert len({s["id"] for s in slides}) == len(slides)


def test_each_video_has_a_slide_of_its_own_for_its_length() -> None:
    photos, videos = _items("photo", 2), _items("video", 3, start=10)
    lengths = {videos[0]["sha256"]: 3.2, videos[1]["sha256"]: 45.0, videos[2]["sha256"]: 900}
    early = Group(key="a", title="Antes", area="", date="", order=(1,), items=photos + videos)
    late = Group(key="b", title="Después", area="", date="", order=(2,), items=_items(
        "photo", 1, start=20))
    slides = kiosk.plan_slides([late, early], KioskSettings(interval_s=10),
                               duration=lambda item: lengths.get(item["sha256"]))
    assert [s["title"] for s in slides] == ["Antes"] * 4 + ["Después"]
    assert [len(s["items"]) for s in slides] == [2, 1, 1, 1, 1]
    assert [s["duration_s"] for s in slides] == [10, 10, 45, kiosk.VIDEO_MAX_S, 10]


def test_showable() -> None:
    ok = {"approved": True, "kind": "photo", "problems": []}
    assert kiosk.showable(ok)
    assert kiosk.showable({**ok, "kind": "raw"}) and kiosk.showable({**ok, "kind": "video"})
    assert not kiosk.showable({**ok, "approved": False})
    assert not kiosk.showable({**ok, "approved": "yes"})
    assert not kiosk.showable({**ok, "kind": "audio"})
    assert not kiosk.showable({**ok, "problems": [{"code": "damaged", "detail": "x"}]})
    # a placeholder is no picture for the public either (a RAW without an embedded preview,
    # a PNG too large to decode, a video whose copies were given up on)
    for code in ("too_large", "no_preview"):
        assert not kiosk.showable({**ok, "problems": [{"code": code, "detail": "x"}]}), code
    assert kiosk.showable({**ok, "problems": [{"code": "implausible_date"}]})


def test_validate() -> None:
    assert kiosk.validate({"background": "#ABCDEF"}).background == "#abcdef"
    assert kiosk.validate({"ticker": ["  uno\tdos ", "", "\x00tres"]}).ticker == \
        ("uno dos", "tres")
    assert kiosk.validate({"interval_s": 1}).interval_s == 1
    for changes in ({"interval_s": True}, {"interval_s": 3601}, {"logo": "0" * 16},
                    {"nada": 1}, {"areas": "Cultura"}, {"month": "2026-5"},
                    {"period": "month"}, {"date_from": "2026-02-30"}):
        with pytest.raises(KioskError):
            kiosk.validate(changes)


# -- acopio kiosk -------------------------------------------------------------------------------


def test_chromium_command_line(tmp_path: Path) -> None:
    config = config_mod.load(None, environ=TEST_ENV, data_dir=tmp_path / "datos")
    argv = kiosk.chromium_argv(config)
    assert argv == [
        "/usr/bin/chromium", "--kiosk", "--noerrdialogs", "--disable-session-crashed-bubble",
        "--disable-infobars", "--check-for-update-interval=31536000", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--autoplay-policy=no-user-gesture-required", "--password-store=basic",
        "--disable-features=Translate", "--disable-pinch", "--overscroll-history-navigation=0",
        f"--user-data-dir={tmp_path / 'datos' / 'state' / 'kiosk-profile'}",
        "http://127.0.0.1:8080/mural"]
    assert kiosk.chromium_argv(config, "http://kit.local:9000/mural")[-1] == \
        "http://kit.local:9000/mural"
    custom = config_mod.load(None, environ={
        **TEST_ENV, "ACOPIO_WEB_PORT": "8123", "ACOPIO_WEB_HOST": "192.168.5.2",
        "ACOPIO_KIOSK_BROWSER": "/opt/chromium/chrome",
        "ACOPIO_KIOSK_EXTRA_ARGS": "--ozone-platform=wayland,--force-device-scale-factor=1.5"},
        data_dir=tmp_path)
    argv = kiosk.chromium_argv(custom)
    assert argv[0] == "/opt/chromium/chrome"
    assert argv[-3:] == ["--ozone-platform=wayland", "--force-device-scale-factor=1.5",
                         "http://192.168.5.2:8123/mural"]
    v6 = config_mod.load(None, environ={**TEST_ENV, "ACOPIO_WEB_HOST": "::1"},
                         data_dir=tmp_path)
    assert kiosk.chromium_argv(v6)[-1] == "http://[::1]:8080/mural"
    other = config_mod.load(None, environ={**TEST_ENV, "ACOPIO_KIOSK_URL":
                                           "https://hub.local/mural"}, data_dir=tmp_path)
    assert kiosk.chromium_argv(other)[-1] == "https://hub.local/mural"
    for bad in ("file:///etc/passwd", "javascript:alert(1)", "chrome://settings", ""):
        if bad:
            with pytest.raises(ValueError):
                kiosk.chromium_argv(config, bad)


def _fake_browser(tmp_path: Path) -> Path:
    """A stand-in for Chromium that writes down how it was started."""
    script = tmp_path / "chromium"
    script.write_text("#!/bin/sh\nprintf '%s\\n' \"$0\" \"$@\" > \"$0.argv\"\n"
                      "printf '%s' \"$DISPLAY\" > \"$0.display\"\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return script


def test_acopio_kiosk_waits_for_the_web_ui_then_becomes_the_browser(
        library: Library, data_dir: Path, tmp_path: Path) -> None:
    """For real: `python -m appliance kiosk` started before the web UI listens waits for it,
    then execs the browser (here a script standing in for Chromium) with the kiosk's
    command line; the process that ran is the browser (same pid, its exit status)."""
    library.copy_to(data_dir)
    browser = _fake_browser(tmp_path)
    from tests.webclient import free_port, server_env

    port = free_port()
    env = server_env({"ACOPIO_KIOSK_BROWSER": str(browser), "ACOPIO_WEB_PORT": str(port)})
    env["DISPLAY"] = ":7"
    launcher = subprocess.Popen(
        [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), "kiosk"],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        time.sleep(2.5)  # no web UI yet: it waits, and starts no browser
        assert launcher.poll() is None, launcher.communicate()
        assert not Path(f"{browser}.argv").exists()
        server = subprocess.Popen(
            [sys.executable, "-m", "appliance", "--data-dir", str(data_dir), "serve",
             "--host", "127.0.0.1", "--port", str(port)],
            cwd=REPO, env=server_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _, err = launcher.communicate(timeout=60)
        finally:
            server.terminate()
            server.wait(timeout=30)
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
    assert launcher.returncode == 0, err
    assert "waiting for http://127.0.0.1:" in err
    argv = Path(f"{browser}.argv").read_text().splitlines()
    config = config_mod.load(None, environ={**TEST_ENV, "ACOPIO_KIOSK_BROWSER": str(browser),
                                            "ACOPIO_WEB_PORT": str(port)}, data_dir=data_dir)
    assert argv == kiosk.chromium_argv(config)
    assert argv[-1] == f"http://127.0.0.1:{port}/mural"
    assert Path(f"{browser}.display").read_text() == ":7"
    profile = data_dir / "state" / "kiosk-profile"
    assert profile.is_dir() and stat.S_IMODE(profile.stat().st_mode) == 0o700


def test_acopio_kiosk_refuses_without_a_display_or_a_browser(tmp_path: Path) -> None:
    config = config_mod.load(None, environ={**TEST_ENV, "ACOPIO_KIOSK_BROWSER":
                                            str(_fake_browser(tmp_path))},
                             data_dir=tmp_path / "datos")
    calls: list[Any] = []
    assert kiosk.launch(config, execv=lambda *a: calls.append(a), environ={}) == 2
    missing = config_mod.load(None, environ={**TEST_ENV, "ACOPIO_KIOSK_BROWSER":
                                             str(tmp_path / "no-existe")}, data_dir=tmp_path)
    assert kiosk.launch(missing, execv=lambda *a: calls.append(a),
                        environ={"DISPLAY": ":0"}) == 2
    assert not calls
    from tests.conftest import run_cli

    done = run_cli("--data-dir", tmp_path / "datos", "kiosk",
                   env={"ACOPIO_KIOSK_BROWSER": str(tmp_path / "no-existe")})
    assert done.returncode == 2 and b"not an executable browser" in done.stderr
    with real_server(tmp_path / "datos") as server:
        # A headless browser needs no display; the wait ends at once on a live web UI.
        headless = config_mod.load(None, environ={
            **TEST_ENV, "ACOPIO_KIOSK_BROWSER": str(_fake_browser(tmp_path)),
            "ACOPIO_WEB_PORT": str(server.port), "ACOPIO_KIOSK_EXTRA_ARGS": "--headless"},
            data_dir=tmp_path / "datos")
        assert kiosk.launch(headless, execv=lambda *a: calls.append(a), environ={}) == 0
    assert calls and calls[0][1][-2:] == ["--headless", f"http://127.0.0.1:{server.port}/mural"]


def test_kiosk_unit_runs_the_screen() -> None:
    unit = (REPO / "systemd" / "acopio-kiosk.service").read_text()
    keys: dict[str, list[str]] = {}
    for line in unit.splitlines():
        if "=" in line and not line.startswith(("#", "[")):
            key, value = line.split("=", 1)
            keys.setdefault(key, []).append(value)
    assert keys["ExecStart"] == [
        "/opt/acopio/.venv/bin/acopio kiosk"]
    assert keys["Restart"] == ["always"]
    assert "graphical.target" in keys["After"][0] and "acopio.service" in keys["After"][0]
    assert keys["WantedBy"] == ["graphical.target"]
    assert "DISPLAY=:0" in keys["Environment"]
    assert keys["User"] == ["acopio"]
    assert keys["IPAddressDeny"] == ["any"] and keys["IPAddressAllow"] == ["localhost"]
    assert "MemoryDenyWriteExecute" not in keys  # V8 needs it off


def test_readme_documents_the_kiosk() -> None:
    readme = (REPO / "README.md").read_text()
    assert "### The kiosk screen" in readme
    for needle in ("`acopio kiosk [--url URL]`", "`manage_kiosk`", "`state/kiosk.json`",
                   "acopio-kiosk.service"):
        assert needle in readme, needle

