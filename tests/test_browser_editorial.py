"""The editorial desk in a real browser (issue 6): Debian's chromium, driven by Playwright,
against a real `acopio run` process, at a phone-sized and a desktop viewport.

One flow per viewport, on a fresh data folder holding a real small archive (four camera
JPEGs imported by `acopio ingest` into an agenda activity, thumbnails and previews made by
`acopio worker --once`) and two accounts made with `acopio users add`:

- Fotografía logs in through the form and picks, rates and captions three photos: two on
  their item pages (on the phone with taps, on the desktop with the keys P, 4, E and Enter,
  and with the mouse), the third through the activity grid's selection mode (a batch),
  which also tags the three at once. The grid's badges, the item pages and the API
  (`edited.by`) show it; approving is refused to her (no button, 403 from the API).
- Dirección approves one photo from its item page and two from the grid's selection,
  withdraws one of those from its item page, and sees "Aprobado por", the history (who, what,
  when) and the API's approved/approved_by follow.
- Dirección downloads the web-size copies of two photos (exiftool reads the caption back with
  its accents; the long side is `editorial.web_long_side`, never enlarged) and a ZIP of the
  approved originals (entries byte for byte the archive's files).

Screenshots of each step go to the test's tmp folder and to
test-output/browser/editorial-<viewport>/. Any console error, failed request, HTTP error
(beyond the 403 provoked on purpose) or request to another host fails the test; the
appliance must exit 0 on SIGTERM.
"""

from __future__ import annotations

import contextlib
import json
import re
import subprocess
import time
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
from PIL import Image

from tests.browser import Appliance, PageWatch, Screenshots, chromium, require_playwright
from tests.cards import exif_jpeg
from tests.conftest import require_tool, run_cli

pytestmark = pytest.mark.slow

VIEWPORTS: dict[str, dict[str, Any]] = {
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True,
              "has_touch": True, "device_scale_factor": 2},
    "desktop": {"viewport": {"width": 1366, "height": 900}},
}
PHOTOGRAPHER, PHOTOGRAPHER_PASSWORD = "fotografia", "camara-lista-2026"
DIRECTOR, DIRECTOR_PASSWORD = "direccion", "prensa-municipal-2026"
ACTIVITY_TITLE = "Entrega de útiles escolares"
WEB_LONG_SIDE = 2048  # editorial.web_long_side's default
CREDIT = "Comunicación Social"  # the first of editorial.credit_presets: the default credit
# The card: four photos of one morning, in capture order (the activity's grid order).
# The first is larger than a web copy (it is shrunk), the second smaller (never enlarged).
PHOTOS: dict[str, dict[str, Any]] = {
    "IMG_0101.JPG": {"when": "2026:05:12 10:00:00", "size": (3000, 2000),
                     "color": (40, 120, 180)},
    "IMG_0102.JPG": {"when": "2026:05:12 10:05:00", "size": (1200, 800),
                     "color": (210, 150, 40)},
    "IMG_0103.JPG": {"when": "2026:05:12 10:10:00", "size": (800, 1200),
                     "color": (60, 160, 90)},
    "IMG_0104.JPG": {"when": "2026:05:12 10:15:00", "size": (1600, 1067),
                     "color": (170, 60, 70)},
}
P1, P2, P3, P4 = PHOTOS
CAPTIONS = {
    P1: "Entrega de útiles en la escuela Niños Héroes",
    P2: "Niñas y niños de 3.º reciben mochilas y cuadernos en el patio",
    P3: "Dirección y maestras de la escuela Niños Héroes tras la entrega",
}
RATINGS = {P1: 4, P2: 5, P3: 3}
TAG = "útiles escolares"
# Fotografía trying what only Dirección may do: the answer she must get.
APPROVE_PATH = r"^/api/items/[0-9a-f]{64}/approve$"


@dataclass
class Kit:
    data_dir: Path
    slug: str
    items: dict[str, dict[str, Any]]  # original name -> `acopio items --json` record

    def sha(self, name: str) -> str:
        return str(self.items[name]["sha256"])


def cli(*args: Any, input: bytes | None = None, timeout: float = 120) -> str:
    done = run_cli(*args, input=input, timeout=timeout)
    assert done.returncode == 0, (args, done.stdout.decode(), done.stderr.decode())
    return done.stdout.decode()


@pytest.fixture
def kit(tmp_path: Path) -> Kit:
    """A data folder as a kit has it after the morning's card: the activity on the agenda,
    the photos imported into its folder with thumbnails and previews, two accounts."""
    data = tmp_path / "data"
    slug = cli("--data-dir", data, "agenda", "add", ACTIVITY_TITLE,
               "--start", "2026-05-12T09:00", "--end", "2026-05-12T13:00",
               "--area", "Educación", "--place", "Escuela Niños Héroes").strip()
    assert slug == "entrega-de-utiles-escolares", slug
    card = tmp_path / "card"
    for name, spec in PHOTOS.items():
        exif_jpeg(card / "DCIM" / "100CANON" / name, spec["when"], "-06:00",
                  size=spec["size"], color=spec["color"])
    cli("--data-dir", data, "ingest", card)
    cli("--data-dir", data, "worker", "--once", timeout=300)
    for name, role, password in ((PHOTOGRAPHER, "photographer", PHOTOGRAPHER_PASSWORD),
                                 (DIRECTOR, "director", DIRECTOR_PASSWORD)):
        made = cli("--data-dir", data, "users", "add", name, "--role", role,
                   "--password-stdin", input=f"{password}\n".encode())
        assert made.strip() == f"created {name} ({role})", made
    records = json.loads(cli("--data-dir", data, "items", "--json"))
    items = {r["original_name"]: r for r in records}
    assert set(items) == set(PHOTOS), sorted(items)
    for name, record in items.items():
        assert record["activity"] == slug, record
        assert {"thumb", "preview"} <= set(record["derivatives"]), (name, record)
        assert (record["width"], record["height"]) == PHOTOS[name]["size"], record
    return Kit(data, slug, items)


@pytest.fixture
def appliance(kit: Kit, tmp_path: Path) -> Iterator[Appliance]:
    app = Appliance(kit.data_dir, tmp_path / "appliance.log", roles=("worker", "web"))
    try:
        yield app
    finally:
        app.kill()


# --------------------------------------------------------------------------- page helpers


def path_of(page: Any) -> str:
    return urlsplit(page.url).path


def press(page: Any, selector: str, touch: bool) -> None:
    """A tap on the phone, a click with the mouse on the desktop."""
    if touch:
        page.locator(selector).tap()
    else:
        page.locator(selector).click()


def login(page: Any, name: str, password: str, touch: bool) -> None:
    page.goto("/")
    assert path_of(page) == "/login", page.url
    page.fill("#login-form input[name=username]", name)
    page.fill("#login-form input[name=password]", password)
    with page.expect_navigation():
        press(page, "#login-form button[type=submit]", touch)
    assert path_of(page) == "/", page.url


def logout(page: Any, touch: bool) -> None:
    with page.expect_navigation():
        press(page, "#logout", touch)
    assert path_of(page) == "/login", page.url


def api_item(page: Any, sha: str) -> dict[str, Any]:
    """GET /api/items/<sha> from the page, with the page's session."""
    got = page.evaluate("""async (sha) => {
        const r = await fetch('/api/items/' + sha, {credentials: 'same-origin'});
        return {status: r.status, body: await r.json()};
    }""", sha)
    assert got["status"] == 200, got
    return dict(got["body"])


def api_post(page: Any, url: str, body: Any) -> dict[str, Any]:
    """A write from the page as its script sends one: JSON with the CSRF header."""
    return dict(page.evaluate("""async ([url, body]) => {
        const token = decodeURIComponent(
            (document.cookie.match(/(?:^|; )acopio_csrf=([^;]*)/) || [])[1] || '');
        const r = await fetch(url, {method: 'POST', credentials: 'same-origin',
            headers: {'Content-Type': 'application/json', 'X-CSRF-Token': token},
            body: JSON.stringify(body)});
        return {status: r.status, body: await r.json().catch(() => null)};
    }""", [url, body]))


def is_patch(sha: str) -> Any:
    return lambda r: r.request.method == "PATCH" and urlsplit(r.url).path == f"/api/items/{sha}"


def is_post(path: str) -> Any:
    return lambda r: r.request.method == "POST" and urlsplit(r.url).path == path


def open_item(page: Any, sha: str) -> None:
    page.goto(f"/item/{sha}")
    page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0")


def open_grid(page: Any, kit: Kit, touch: bool) -> None:
    """The activity's page, its grid in selection mode ("Seleccionar")."""
    page.goto(f"/agenda/{kit.slug}")
    assert page.locator("h1").inner_text().startswith(ACTIVITY_TITLE)
    page.wait_for_function(
        "() => [...document.querySelectorAll('#grid img')]"
        ".every(i => i.complete && i.naturalWidth > 0)")
    titles = page.locator("#grid a").evaluate_all("as => as.map(a => a.title)")
    assert titles == list(PHOTOS), titles  # by capture time
    toggle = page.locator("#select-toggle")
    assert toggle.inner_text() == "Seleccionar"
    press(page, "#select-toggle", touch)
    assert page.locator("#action-bar").is_visible()
    assert toggle.get_attribute("aria-pressed") == "true"


def choose(page: Any, kit: Kit, names: list[str], touch: bool) -> None:
    """Select cells: on the phone a tap on the picture, on the desktop the first box's
    checkbox then a shift-click on the last (a range)."""
    if touch:
        for name in names:
            page.locator(f"#grid li[data-sha='{kit.sha(name)}'] a").tap()
    else:
        page.locator(f"#grid li[data-sha='{kit.sha(names[0])}'] input[name=sha256]").click()
        if len(names) > 1:
            page.locator(f"#grid li[data-sha='{kit.sha(names[-1])}'] input[name=sha256]") \
                .click(modifiers=["Shift"])
    chosen = page.locator("#grid input[name=sha256]:checked").evaluate_all(
        "bs => bs.map(b => b.value)")
    assert chosen == [kit.sha(n) for n in names], chosen
    count = page.locator("#select-count").inner_text()
    assert count == ("1 seleccionado" if len(names) == 1 else f"{len(names)} seleccionados")


def run_batch(page: Any, selector: str, path: str, done: str, touch: bool) -> None:
    """An action bar button: its POST answered 200, and the bar says it is done."""
    with page.expect_response(is_post(path)) as answer:
        press(page, selector, touch)
    assert answer.value.status == 200, answer.value.text()
    if path == "/api/items/batch":  # each item's revision as the page shows it
        sent = answer.value.request.post_data_json
        assert set(sent["base_revisions"]) == set(sent["sha256"]), sent
        assert answer.value.json()["conflicts"] == []
    page.wait_for_function(
        "(text) => document.getElementById('bar-status').textContent === text", arg=done)


def cell_marks(page: Any, kit: Kit, name: str) -> dict[str, Any]:
    """What a grid cell's badges show."""
    cell = page.locator(f"#grid li[data-sha='{kit.sha(name)}'] .marks")
    return {"picked": cell.locator(".mark.picked").count() == 1,
            "rejected": cell.locator(".mark.rejected").count() == 1,
            "stars": (cell.locator(".mark.stars").inner_text()
                      if cell.locator(".mark.stars").count() else ""),
            "approved": cell.locator(".mark.approved").count() == 1}


def history(page: Any) -> list[dict[str, Any]]:
    """The item page's history, newest first: who, what, when and the changes shown."""
    return list(page.locator("#history .history-list > li").evaluate_all("""lis => {
        const flat = (node) => node.textContent.replace(/\\s+/g, ' ').trim();
        return lis.map(li => ({
            by: flat(li.querySelector('strong')),
            text: flat(li),
            at: li.querySelector('time').getAttribute('datetime'),
            shown: flat(li.querySelector('time')),
            changes: [...li.querySelectorAll('ul > li')].map(flat),
        }));
    }"""))


def recent(at: str, since: datetime) -> bool:
    moment = datetime.fromisoformat(at)
    return since - timedelta(seconds=2) <= moment <= datetime.now(UTC) + timedelta(seconds=2)


def exif_of(path: Path) -> dict[str, Any]:
    done = subprocess.run([require_tool("exiftool"), "-j", "-IPTC:Caption-Abstract",
                           "-XMP-dc:Description", "-IPTC:By-line", str(path)],
                          capture_output=True, check=True, timeout=60)
    return dict(json.loads(done.stdout.decode("utf-8"))[0])


# --------------------------------------------------------------------------- the flow


def describe_on_item_page(page: Any, kit: Kit, name: str, touch: bool, keys: bool,
                          shots: Screenshots) -> None:
    """Fotografía picks, rates and captions one photo on its item page: with taps (phone),
    the keyboard (P, the stars' digit, E, the caption, Enter in the next field) or the
    mouse; every change is a PATCH the page confirms without a reload."""
    sha, caption, stars = kit.sha(name), CAPTIONS[name], RATINGS[name]
    open_item(page, sha)
    assert page.locator("h1.filename").inner_text() == name
    assert page.locator("#approval-line").inner_text() == "Sin aprobar"
    assert page.locator("#approval-form").count() == 0, "Fotografía was offered to approve"
    assert page.locator("#item-marks .mark").count() == 0
    page.evaluate("() => { window.acopioMarker = 'same-page'; }")
    if keys:
        page.locator("h1.filename").click()  # the page has the focus, no field does
        with page.expect_response(is_patch(sha)) as answer:
            page.keyboard.press("p")
        assert answer.value.status == 200
        page.wait_for_selector("#item-marks .mark.picked")
        with page.expect_response(is_patch(sha)) as answer:
            page.keyboard.press(str(stars))
        assert answer.value.status == 200
        page.keyboard.press("e")
        assert page.evaluate("() => document.activeElement.id") == "caption"
        page.keyboard.type(caption)
        assert page.locator("#caption").input_value() == caption  # "e" was not typed
        assert page.locator("#edit-status").inner_text() == "Hay cambios sin guardar."
        shots.take(page, f"caption-typed-{name[:-4].lower()}")
        page.keyboard.press("Tab")  # to the tags field; Enter in a field saves
        with page.expect_response(is_patch(sha)) as answer:
            page.keyboard.press("Enter")
    else:
        with page.expect_response(is_patch(sha)) as answer:
            press(page, "#edit button[data-pick=picked]", touch)
        assert answer.value.status == 200
        page.wait_for_selector("#item-marks .mark.picked")
        with page.expect_response(is_patch(sha)) as answer:
            press(page, f"#edit button[data-rating='{stars}']", touch)
        assert answer.value.status == 200
        press(page, "#caption", touch)
        page.keyboard.type(caption)
        assert page.locator("#edit-status").inner_text() == "Hay cambios sin guardar."
        shots.take(page, f"caption-typed-{name[:-4].lower()}")
        with page.expect_response(is_patch(sha)) as answer:
            press(page, "#save", touch)
    assert answer.value.status == 200, answer.value.text()
    page.wait_for_function(
        "() => document.getElementById('edit-status').textContent === 'Guardado.'")
    # The page shows it at once, without a reload: marks, caption under the picture,
    # the pressed buttons, and the history the script fetched again.
    page.wait_for_function(
        "(n) => document.querySelector('#item-marks .mark.stars')?.textContent === '★' + n",
        arg=stars)
    assert page.evaluate("() => window.acopioMarker") == "same-page", "the page reloaded"
    assert page.locator("#item-marks .mark.picked").count() == 1
    assert page.locator("#shown-caption").inner_text() == caption
    assert page.locator("#edit button[data-pick=picked]").get_attribute("aria-pressed") == "true"
    assert page.locator("#edit button.star.filled").count() == stars
    page.wait_for_function(
        "() => document.querySelectorAll('#history .history-list > li').length >= 3")
    shots.take(page, f"described-{name[:-4].lower()}", full_page=True)
    # What the server holds, and the page drawn again from it.
    page.reload()
    assert page.locator("#caption").input_value() == caption
    assert page.locator("#shown-caption").inner_text() == caption
    assert page.locator("#item-marks .mark.picked").count() == 1
    assert page.locator("#item-marks .mark.stars").inner_text() == f"★{stars}"
    entries = history(page)
    assert len(entries) == 3 and {e["by"] for e in entries} == {PHOTOGRAPHER}, entries
    assert all("editó" in e["text"] for e in entries), entries
    assert any(f"Pie de foto: (vacío) → {caption}" in c for e in entries
               for c in e["changes"]), entries


def check_photographer_edits(page: Any, kit: Kit, since: datetime) -> None:
    """The API holds what Fotografía did, each field marked as hers."""
    for name in (P1, P2, P3):
        got = api_item(page, kit.sha(name))
        assert got["pick"] == "picked", (name, got)
        assert got["caption"] == CAPTIONS[name], (name, got)
        assert got["rating"] == RATINGS[name], (name, got)
        assert got["tags"] == [TAG], (name, got)
        assert got["approved"] is False, (name, got)
        for field in ("pick", "caption", "rating", "tags"):
            mark = got["edited"][field]
            assert mark["by"] == PHOTOGRAPHER and recent(mark["at"], since), (name, field, got)
        assert {h["by"] for h in got["history"]} == {PHOTOGRAPHER}, got["history"]
        assert {h["action"] for h in got["history"]} == {"edit"}, got["history"]
    untouched = api_item(page, kit.sha(P4))
    assert untouched["pick"] is None and untouched["caption"] == "" \
        and untouched["rating"] == 0 and untouched["history"] == [], untouched


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_editorial_desk_in_chromium(viewport: str, kit: Kit, appliance: Appliance,
                                    tmp_path: Path) -> None:
    started = time.monotonic()
    since = datetime.now(UTC)
    require_playwright()  # fails (never skips) without playwright or /usr/bin/chromium
    require_tool("exiftool")
    touch = viewport == "phone"
    appliance.start(setup_code=False)  # the accounts exist: no setup code is printed
    shots = Screenshots(tmp_path, f"editorial-{viewport}")
    downloads = tmp_path / "downloads"
    downloads.mkdir()
    watch = PageWatch(appliance.url)
    with chromium() as browser:
        context = browser.new_context(**VIEWPORTS[viewport], locale="es-MX",
                                      base_url=appliance.url, accept_downloads=True)
        context.set_default_timeout(15_000)
        watch.attach(context)
        page = context.new_page()

        # 1. Fotografía logs in through the form; the activity's grid, nothing marked yet.
        login(page, PHOTOGRAPHER, PHOTOGRAPHER_PASSWORD, touch)
        page.goto(f"/agenda/{kit.slug}")
        assert page.locator("#grid .mark").count() == 0
        shots.take(page, "photographer-grid")
        watch.check("login", page)

        # 2. Two photos on their item pages: on the phone with taps; on the desktop the
        # first with the keyboard alone, the second with the mouse.
        describe_on_item_page(page, kit, P1, touch, keys=not touch, shots=shots)
        watch.check(f"describing {P1}", page)
        describe_on_item_page(page, kit, P2, touch, keys=False, shots=shots)
        watch.check(f"describing {P2}", page)

        # 3. The third through the grid's selection (pick, stars, caption), then a tag for
        # the three at once. On the desktop, P and the digit are the selection's keys.
        open_grid(page, kit, touch)
        choose(page, kit, [P3], touch)
        batch = "/api/items/batch"
        if touch:
            run_batch(page, "#action-bar button[data-batch=pick][data-value=picked]", batch,
                      "Listo: 1 elemento.", touch)
            run_batch(page, f"#action-bar button[data-batch=rating][data-value='{RATINGS[P3]}']",
                      batch, "Listo: 1 elemento.", touch)
        else:
            for key in ("p", str(RATINGS[P3])):
                with page.expect_response(is_post(batch)) as answer:
                    page.keyboard.press(key)
                assert answer.value.status == 200, answer.value.text()
        page.wait_for_function(
            "(sha) => document.querySelector(`#grid li[data-sha='${sha}'] .mark.stars`)"
            "?.textContent === '★3'", arg=kit.sha(P3))
        press(page, "#action-bar details.describe summary", touch)
        press(page, "#action-bar [data-field=caption]", touch)
        page.keyboard.type(CAPTIONS[P3])
        shots.take(page, "batch-describe")
        run_batch(page, "#action-bar button[data-batch=describe]", batch,
                  "Listo: 1 elemento.", touch)
        assert page.locator("#action-bar [data-field=caption]").input_value() == ""
        press(page, "#action-bar [data-select=none]", touch)
        choose(page, kit, [P1, P2, P3], touch)
        press(page, "#action-bar [data-field=add_tags]", touch)
        page.keyboard.type(TAG)
        run_batch(page, "#action-bar button[data-batch=describe]", batch,
                  "Listo: 3 elementos.", touch)
        for name in (P1, P2, P3):  # the cells' badges, updated by the script
            assert cell_marks(page, kit, name) == {
                "picked": True, "rejected": False, "stars": f"★{RATINGS[name]}",
                "approved": False}, name
        assert cell_marks(page, kit, P4) == {"picked": False, "rejected": False, "stars": "",
                                             "approved": False}
        assert page.locator("#action-bar [data-batch=approve]").count() == 0
        shots.take(page, "photographer-batch-done")
        # and as the server draws them
        page.goto(f"/agenda/{kit.slug}")
        for name in (P1, P2, P3):
            assert cell_marks(page, kit, name)["picked"], name
            assert cell_marks(page, kit, name)["stars"] == f"★{RATINGS[name]}", name
        assert page.locator(f"#grid li[data-sha='{kit.sha(P4)}'] .mark").count() == 0
        open_item(page, kit.sha(P3))
        assert page.locator("#shown-caption").inner_text() == CAPTIONS[P3]
        assert page.locator("#caption").input_value() == CAPTIONS[P3]
        assert page.locator("#item-marks .mark.stars").inner_text() == "★3"
        assert f"Etiquetas\n{TAG}\n" in page.locator("#meta").inner_text()
        assert page.locator("#edit input[name=tags]").input_value() == TAG
        check_photographer_edits(page, kit, since)
        watch.check("the batch", page)

        # 4. Approving is Dirección's: no button for Fotografía, and the API says 403.
        assert page.locator("#approval-form, #approve-button").count() == 0
        watch.expect(403, APPROVE_PATH)
        refused = api_post(page, f"/api/items/{kit.sha(P1)}/approve", {})
        assert refused["status"] == 403, refused
        assert refused["body"]["error"] == "forbidden", refused  # the role, not the CSRF
        assert api_item(page, kit.sha(P1))["approved"] is False
        shots.take(page, "photographer-no-approve", full_page=True)
        watch.check("the refused approval", page)
        logout(page, touch)

        # 5. Dirección approves the first photo from its item page.
        login(page, DIRECTOR, DIRECTOR_PASSWORD, touch)
        open_item(page, kit.sha(P1))
        button = page.locator("#approve-button")
        assert button.inner_text() == "Aprobar"
        with page.expect_response(is_post(f"/api/items/{kit.sha(P1)}/approve")) as answer:
            press(page, "#approve-button", touch)
        assert answer.value.status == 200, answer.value.text()
        page.wait_for_function(
            "() => document.getElementById('approval-line').textContent"
            ".trim().startsWith('Aprobado por')")
        line = page.locator("#approval-line").inner_text()
        assert re.match(rf"^Aprobado por {DIRECTOR} el .*2\d{{3}}", line), line
        assert page.locator("#approve-button").inner_text() == "Retirar aprobación"
        assert page.locator("#item-marks .mark.approved").inner_text() == "Aprobado"
        entries = history(page)
        assert entries[0]["by"] == DIRECTOR and "aprobó" in entries[0]["text"], entries
        assert entries[0]["changes"] == [] and recent(entries[0]["at"], since), entries
        assert entries[0]["shown"], entries  # when, as people read it
        assert [e["by"] for e in entries[1:]] == [PHOTOGRAPHER] * 4, entries
        shots.take(page, "director-approved", full_page=True)
        watch.check("approving on the item page", page)

        # 6. Two more from the grid's selection.
        open_grid(page, kit, touch)
        choose(page, kit, [P2, P3], touch)
        run_batch(page, "#action-bar button[data-batch=approve][data-value='1']",
                  "/api/items/approval", "Listo: 2 elementos.", touch)
        for name in (P1, P2, P3):
            assert cell_marks(page, kit, name)["approved"], name
        assert not cell_marks(page, kit, P4)["approved"]
        shots.take(page, "director-batch-approved")
        watch.check("approving a selection", page)

        # 7. ... and withdraws the third's approval from its item page.
        open_item(page, kit.sha(P3))
        assert page.locator("#approval-line").inner_text().startswith(f"Aprobado por {DIRECTOR}")
        button = page.locator("#approve-button")
        assert button.inner_text() == "Retirar aprobación"
        with page.expect_response(is_post(f"/api/items/{kit.sha(P3)}/withdraw")) as answer:
            press(page, "#approve-button", touch)
        assert answer.value.status == 200, answer.value.text()
        page.wait_for_function(
            "() => document.getElementById('approval-line').textContent"
            ".trim().startsWith('Aprobación retirada por')")
        line = page.locator("#approval-line").inner_text()
        assert line.startswith(f"Aprobación retirada por {DIRECTOR} el "), line
        assert page.locator("#approve-button").inner_text() == "Aprobar"
        assert page.locator("#item-marks .mark.approved").count() == 0
        assert page.locator("#item-marks .mark.picked").count() == 1  # the pick stays
        entries = history(page)
        assert [(e["by"], e["text"].split(" · ")[0]) for e in entries[:2]] == [
            (DIRECTOR, f"{DIRECTOR} retiró la aprobación"), (DIRECTOR, f"{DIRECTOR} aprobó")], \
            entries
        assert all(recent(e["at"], since) for e in entries), entries
        assert {e["by"] for e in entries[2:]} == {PHOTOGRAPHER}, entries
        shots.take(page, "director-withdrawn", full_page=True)
        # the API agrees
        for name, approved in ((P1, True), (P2, True), (P3, False), (P4, False)):
            got = api_item(page, kit.sha(name))
            assert got["approved"] is approved, (name, got)
            if name == P4:
                assert got["approved_by"] is None, got
            else:
                assert got["approved_by"] == DIRECTOR and recent(got["approved_at"], since), got
            actions = [(h["by"], h["action"]) for h in got["history"]
                       if h["action"] != "edit"]
            expected = {P1: [(DIRECTOR, "approve")], P2: [(DIRECTOR, "approve")],
                        P3: [(DIRECTOR, "approve"), (DIRECTOR, "withdraw")], P4: []}[name]
            assert actions == expected, (name, got["history"])
        watch.check("withdrawing", page)

        # 8. The web-size copies: the caption as typed (accents and all), the default
        # credit, the long side at most editorial.web_long_side and never enlarged.
        for name in (P1, P2):
            open_item(page, kit.sha(name))
            with page.expect_download() as dl:
                press(page, "#download-web", touch)
            download = dl.value
            assert download.failure() is None, download.failure()
            assert download.suggested_filename == f"{name[:-4]}-web.jpg"
            saved = downloads / download.suggested_filename
            download.save_as(saved)
            tags = exif_of(saved)
            assert tags.get("Caption-Abstract") == CAPTIONS[name], tags
            assert tags.get("Description") == CAPTIONS[name], tags
            assert tags.get("By-line") == CREDIT, tags
            with Image.open(saved) as img:
                assert img.format == "JPEG"
                width, height = PHOTOS[name]["size"]
                scale = min(1.0, WEB_LONG_SIDE / max(width, height))
                expected_size = (round(width * scale), round(height * scale))
                assert abs(img.width - expected_size[0]) <= 1 \
                    and abs(img.height - expected_size[1]) <= 1, (name, img.size)
                assert max(img.size) == min(WEB_LONG_SIDE, max(width, height)), img.size
        shots.take(page, "web-copy-downloaded")
        watch.check("the web-size copies", page)

        # 9. A ZIP of the approved originals, from the grid's selection.
        open_grid(page, kit, touch)
        choose(page, kit, [P1, P2], touch)
        shots.take(page, "zip-selection")
        with page.expect_download() as dl:
            press(page, "#action-bar button[name=variant][value=original]", touch)
        download = dl.value
        assert download.failure() is None, download.failure()
        assert download.suggested_filename.endswith(".zip"), download.suggested_filename
        saved = downloads / download.suggested_filename
        download.save_as(saved)
        with zipfile.ZipFile(saved) as archive:
            assert archive.testzip() is None
            expected = {}
            for name in (P1, P2):
                record = kit.items[name]
                entry = f"{record['folder'].split('/')[-1]}/{name}"
                expected[entry] = (kit.data_dir / record["archive_path"]).read_bytes()
            assert sorted(archive.namelist()) == sorted(expected), archive.namelist()
            for entry, content in expected.items():
                assert archive.read(entry) == content, entry
        assert path_of(page) == f"/agenda/{kit.slug}", page.url  # the page stayed
        shots.take(page, "zip-downloaded")
        watch.check("the ZIP", page)

        logout(page, touch)
        watch.check("logout", page)
        context.close()

    assert watch.hosts == {urlsplit(appliance.url).netloc}, watch.hosts
    assert appliance.stop() == 0, appliance.failure("the appliance did not exit cleanly")
    print(f"editorial {viewport}: {time.monotonic() - started:.1f} s, "
          f"screenshots in {shots.dirs}")


@contextlib.contextmanager
def phone_page(appliance: Appliance) -> Iterator[Any]:
    """The appliance started, and a page in Chromium as a phone sees it (touch, 390 px)."""
    require_playwright()
    appliance.start(setup_code=False)
    with chromium() as browser:
        context = browser.new_context(**VIEWPORTS["phone"], locale="es-MX",
                                      base_url=appliance.url)
        context.set_default_timeout(15_000)
        yield context.new_page()


def test_a_phone_on_weak_wifi_or_logged_out_keeps_what_was_typed(
        kit: Kit, appliance: Appliance) -> None:
    """At an event: a save that never answers held every later one, with no word; with no
    network the page said "Failed to fetch"; and a session ended mid-edit reloaded the page
    every 2.5 s (the browser asking "leave this page?") and then lost the typed caption."""
    with phone_page(appliance) as page:
        page.clock.install()  # the page's timers, moved by the test: a 20 s wait in an instant
        login(page, PHOTOGRAPHER, PHOTOGRAPHER_PASSWORD, touch=True)
        open_item(page, kit.sha(P1))
        status = page.locator("#edit-status")
        typed = "Entrega de útiles — escrito sin señal"
        page.locator("#caption").fill(typed)

        api = f"**/api/items/{kit.sha(P1)}"
        page.route(api, lambda route: route.abort("internetdisconnected"))
        press(page, "#save", touch=True)
        page.wait_for_function("() => document.getElementById('edit-status')"
                               ".textContent.includes('sin conexión con el equipo')")
        page.unroute(api)

        stalled: list[Any] = []
        page.route(api, lambda route: stalled.append(route))  # nothing ever answers it
        press(page, "#save", touch=True)
        page.wait_for_function("() => document.getElementById('edit-status')"
                               ".textContent === 'Guardando…'")
        assert stalled
        page.clock.fast_forward(21_000)
        page.wait_for_function("() => document.getElementById('edit-status')"
                               ".textContent.includes('sin conexión con el equipo')")
        page.unroute(api)

        cli("--data-dir", kit.data_dir, "users", "passwd", PHOTOGRAPHER, "--password-stdin",
            input=b"otra-clave-larga-2026\n")  # her sessions end
        page.clock.fast_forward(10_000)  # four status polls, each a 401 now
        press(page, "#save", touch=True)
        page.wait_for_function("() => document.getElementById('edit-status')"
                               ".textContent.includes('su sesión terminó')")
        assert path_of(page) == f"/item/{kit.sha(P1)}"
        assert page.locator("#caption").input_value() == typed
        assert "Failed to fetch" not in status.inner_text()
    listed = json.loads(cli("--data-dir", kit.data_dir, "items", "--json"))
    assert {i["sha256"]: i.get("caption") for i in listed}[kit.sha(P1)] != typed  # not saved


def test_the_director_is_shown_what_changed_before_her_approval(
        kit: Kit, appliance: Appliance) -> None:
    """Her page showed one caption; Fotografía changed it meanwhile; "Aprobar" approved the
    new text unseen. Now nothing is approved and the page says who changed what."""
    with phone_page(appliance) as page:
        login(page, DIRECTOR, DIRECTOR_PASSWORD, touch=True)
        open_item(page, kit.sha(P2))
        cli("--data-dir", kit.data_dir, "items", "set", kit.sha(P2), "--caption",
            "BORRADOR no publicar", "--as", PHOTOGRAPHER)
        press(page, "#approve-button", touch=True)
        conflict = page.locator("#approval-conflict")
        conflict.wait_for()
        said = conflict.inner_text()
        assert "No se aprobó" in said and "BORRADOR no publicar" in said, said
        assert PHOTOGRAPHER in said, said
        assert api_item(page, kit.sha(P2))["approved"] is False
        press(page, "#approve-button", touch=True)  # seen now: approved
        page.wait_for_function("() => !document.getElementById('approval-conflict')")
        page.wait_for_function("() => document.getElementById('approval-line')"
                               ".textContent.includes('Aprobado por')")
        assert api_item(page, kit.sha(P2))["approved"] is True


def test_a_card_imported_meanwhile_keeps_the_selection_and_the_focus(
        kit: Kit, appliance: Appliance, tmp_path: Path) -> None:
    """"Lo más reciente" redrew itself when a card came in: three photos chosen on a phone
    became "0 seleccionados" (an approval or a ZIP then covered fewer than chosen), and the
    keyboard's focus fell back to the page's start."""
    def import_card(name: str, seed: int) -> None:
        card = tmp_path / name
        exif_jpeg(card / "DCIM" / f"{name}.JPG", "2026:05:12 11:00:00", "-06:00",
                  color=(seed, 200, 100))
        cli("--data-dir", kit.data_dir, "ingest", card)

    with phone_page(appliance) as page:
        login(page, PHOTOGRAPHER, PHOTOGRAPHER_PASSWORD, touch=True)
        assert page.locator("#grid[data-live]").count() == 1  # "/": the live grid
        cells = "#grid li.cell"
        assert page.locator(cells).count() == len(PHOTOS)
        press(page, "#select-toggle", touch=True)
        choose(page, kit, [P3, P2, P1], touch=True)  # newest first, as the grid has them
        import_card("IMG_0201", 1)
        time.sleep(6)  # two status polls and more: the grid holds still while choosing
        assert page.locator(cells).count() == len(PHOTOS)
        assert page.locator("#select-count").inner_text() == "3 seleccionados"
        press(page, "#select-toggle", touch=True)  # done choosing: the grid catches up
        page.wait_for_function(f"() => document.querySelectorAll('{cells}').length === "
                               f"{len(PHOTOS) + 1}")

        link = f"#grid li[data-sha='{kit.sha(P4)}'] a"
        page.locator(link).focus()
        import_card("IMG_0202", 2)
        page.wait_for_function(f"() => document.querySelectorAll('{cells}').length === "
                               f"{len(PHOTOS) + 2}")
        assert page.evaluate("() => document.activeElement.closest('li')?.dataset.sha") \
            == kit.sha(P4)


def test_every_page_fits_a_phone_and_reads_in_the_sun(kit: Kit, appliance: Appliance) -> None:
    """On a 390 px phone "/informes/resultados" was 632 px wide and "/estado" 435 (their
    last columns cut off), the menu took four lines above the photos, stars were 2.2:1 and
    warnings 4.2:1 on white, and there was no way past the 11 links of the header for a
    keyboard."""
    def contrast(rgb: str) -> float:
        r, g, b = (int(v) / 255 for v in rgb[rgb.index("(") + 1:rgb.index(")")].split(",")[:3])
        lin = [c / 12.92 if c <= 0.03928 else ((c + 0.055) / 1.055) ** 2.4 for c in (r, g, b)]
        return 1.05 / (0.2126 * lin[0] + 0.7152 * lin[1] + 0.0722 * lin[2] + 0.05)

    with phone_page(appliance) as page:
        login(page, DIRECTOR, DIRECTOR_PASSWORD, touch=True)
        pages = ["/", "/estado", "/informes/resultados?month=2026-05", "/usuarios",
                 "/mural/ajustes", f"/agenda/{kit.slug}", f"/item/{kit.sha(P1)}", "/agenda",
                 "/archivo"]
        for path in pages:
            page.goto(path)
            wide = page.evaluate("() => document.documentElement.scrollWidth")
            assert wide <= 390, (path, wide)
        page.goto(f"/item/{kit.sha(P1)}")
        page.locator(".stars button[data-rating='3']").first.tap()  # some filled, some not
        page.wait_for_selector(".stars button.filled")
        for selector in (".stars button:not(.filled):not(.star-clear)", ".stars button.filled"):
            color = page.locator(selector).first.evaluate("b => getComputedStyle(b).color")
            assert contrast(color) >= 3, (selector, color)
        warn = page.evaluate("() => getComputedStyle(document.documentElement)"
                             ".getPropertyValue('--warn').trim()")
        assert contrast("rgb(" + ",".join(str(int(warn[i:i + 2], 16)) for i in (1, 3, 5))
                        + ")") >= 4.5, warn
        page.goto("/")  # the photos start in the first third of a phone's screen
        top = page.evaluate("() => document.querySelector('#grid li.cell')"
                            ".getBoundingClientRect().top")
        header = page.evaluate("() => document.querySelector('header.top').offsetHeight")
        assert header <= 120 and top < 360, (header, top)  # were 190 and 424: 4 menu lines
        page.goto("/")  # the live status strip: drawn again only when it changes
        page.wait_for_function("() => document.querySelector('#live-status').children.length")
        page.evaluate("() => document.querySelector('#live-status').firstElementChild"
                      ".dataset.mark = 'drawn once'")
        time.sleep(6)  # two polls answered 304
        assert page.evaluate("() => document.querySelector('#live-status')"
                             ".firstElementChild.dataset.mark") == "drawn once"
        page.goto(f"/item/{kit.sha(P1)}")
        page.keyboard.press("Tab")  # the first stop: past the header, to the content
        assert page.evaluate("() => document.activeElement.textContent") == "Ir al contenido"
        page.keyboard.press("Enter")
        assert page.evaluate("() => document.activeElement.id") == "main"
