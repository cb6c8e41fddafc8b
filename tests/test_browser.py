"""The web UI in a real browser: Debian's chromium, driven by Playwright, against a real
`acopio run` process, at a phone-sized and a desktop viewport.

One flow per viewport, on a fresh data folder: first start with the setup code, logout and
login, a card plugged in (umockdev udev event, real FAT image mounted read-only by fusefat
through the devices role) appearing live in "Lo más reciente" without a reload, an item with
previous/next, a video proxy that plays, search, English and back, a photo dropped into the
hot folder growing the open grid, logout. Screenshots of each step go to the test's tmp
folder and to test-output/browser/<viewport>/ (kept for people to look at after CI). Any
console error, failed request, HTTP error (beyond the expected 401s) or request to another
host fails the test.
"""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest

from tests import udevbed
from tests.browser import (
    Appliance,
    PageWatch,
    Screenshots,
    chromium,
    require_playwright,
    wait_until,
)
from tests.cards import exif_jpeg, fat_image, ffmpeg_video, sample
from tests.conftest import require_tool

pytestmark = [pytest.mark.slow, pytest.mark.root]  # root: fusefat needs /dev/fuse
udev_testbed = udevbed.udev_testbed

VIEWPORTS: dict[str, dict[str, Any]] = {
    "phone": {"viewport": {"width": 390, "height": 844}, "is_mobile": True,
              "has_touch": True, "device_scale_factor": 2},
    "desktop": {"viewport": {"width": 1366, "height": 900}},
}
USER = "direccion"
PASSWORD = "prensa-municipal-2026"
# What the card holds: two real camera JPEGs, two photos and a clip of one event (same day,
# so they share an archive folder and previous/next walks them), in a camera's layout.
EVENT_PHOTOS = ("IMG_0003.JPG", "IMG_0004.JPG")
VIDEO = "C0001.MP4"
INBOX_PHOTO = "entrevista.jpg"
CARD_ITEMS = 5
LIVE_TIMEOUT_S = 60
# A slow card reader: the card stays "Montando" this long, so the status strip (polled every
# 2.5 s) is seen showing it before it is ready (importing these files takes 0.2 s).
MOUNT_DELAY_S = 3
# The status strip's device states, as the page showed them, in order.
RECORD_STATES = """() => {
    window.acopioStates = [];
    const box = document.getElementById('live-status');
    new MutationObserver(() => {
        for (const d of box.querySelectorAll('.device[data-device]')) {
            const seen = d.dataset.device + ':' + d.dataset.status;
            if (window.acopioStates.at(-1) !== seen) window.acopioStates.push(seen);
        }
    }).observe(box, {childList: true, subtree: true});
}"""


@pytest.fixture
def card_image(tmp_path: Path) -> Path:
    local = tmp_path / "card-files"
    files = {
        "DCIM/100CANON/IMG_0001.JPG": sample("flower.jpg", local / "flower.jpg"),
        "DCIM/100CANON/IMG_0002.JPG": sample("xmp_test.jpg", local / "xmp_test.jpg"),
        "DCIM/101CANON/IMG_0003.JPG": exif_jpeg(
            local / "p3.jpg", "2026:05:10 11:15:00", "-06:00", size=(1200, 800),
            color=(30, 110, 170), gps=(19.4326, -99.1332)),
        "DCIM/101CANON/IMG_0004.JPG": exif_jpeg(
            local / "p4.jpg", "2026:05:10 11:20:00", "-06:00", size=(800, 1200),
            color=(200, 140, 40)),
        f"PRIVATE/M4ROOT/CLIP/{VIDEO}": ffmpeg_video(
            local / "clip.mp4", "2026-05-10T17:30:00Z", seconds=3),
    }
    assert len(files) == CARD_ITEMS
    return fat_image(tmp_path / "card.img", files, label="EOS_DIGITAL")


@pytest.fixture
def appliance(udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> Iterator[Appliance]:
    """The whole appliance (devices, inbox, worker, web) in one process that sees the
    umockdev test bed: its device watcher mounts cards with fusefat, read-only."""
    require_tool("fusefat")
    require_tool("fusermount")
    media = tmp_path / "media"
    app = Appliance(
        tmp_path / "data", tmp_path / "appliance.log",
        roles=("devices", "inbox", "worker", "web"),
        base_env=udev_testbed.child_env(),
        env={"ACOPIO_DEVICES_MOUNT_COMMAND":
             f"sh -c 'sleep {MOUNT_DELAY_S} && exec fusefat -o ro \"$0\" \"$1\"' "
             "{device} {mountpoint}",
             "ACOPIO_DEVICES_UNMOUNT_COMMAND": "fusermount -u {mountpoint}",
             "ACOPIO_DEVICES_MOUNT_ROOT": str(media)})
    try:
        yield app
    finally:
        app.kill()
        if media.exists():
            for mount in media.iterdir():
                if mount.is_mount():
                    subprocess.run(["umount", "-l", str(mount)], check=False)


def insert_card(testbed: udevbed.UdevTestbed, image: Path) -> str:
    """Plug the card in: the partition appears, its content is the FAT image, then udev's
    probe announces the filesystem with a "change" event, as when a card enters a reader."""
    syspath = testbed.add_card(id="sdb1", label="EOS_DIGITAL", uuid="2026-0510", fstype="",
                               devnode="/dev/sdb1")
    Path(testbed.node_path("/dev/sdb1")).write_bytes(image.read_bytes())
    testbed.set_property(syspath, "ID_FS_TYPE", "vfat")
    testbed.uevent(syspath, "change")
    return syspath


def path_of(page: Any) -> str:
    return urlsplit(page.url).path


def grid_images_loaded(page: Any) -> int:
    """How many grid thumbnails have loaded (a broken image counts as not loaded)."""
    return int(page.evaluate(
        "() => [...document.querySelectorAll('#grid img')]"
        ".filter(i => i.complete && i.naturalWidth > 0).length"))


def assert_in_viewport(page: Any, selector: str) -> None:
    """Visible and fully inside the viewport's width (reachable without scrolling sideways)."""
    locator = page.locator(selector)
    assert locator.is_visible(), f"{selector} is not visible"
    box = locator.bounding_box()
    width = page.viewport_size["width"]
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= width, \
        f"{selector} lies outside the {width} px viewport: {box}"
    overflow = page.evaluate("() => document.documentElement.scrollWidth")
    assert overflow <= width, f"the page is {overflow} px wide in a {width} px viewport"


def open_when(page: Any, url: str, selector: str, what: str, app: Appliance,
              timeout: float = LIVE_TIMEOUT_S) -> None:
    """Open `url` until `selector` is on it (a derivative the worker has not made yet)."""
    def ready() -> bool:
        page.goto(url)
        return page.locator(selector).count() > 0

    wait_until(ready, what, timeout, interval=1.0, on_timeout=lambda: app.log_tail())


@pytest.mark.parametrize("viewport", list(VIEWPORTS))
def test_main_flows_in_chromium(viewport: str, appliance: Appliance, card_image: Path,
                                udev_testbed: udevbed.UdevTestbed, tmp_path: Path) -> None:
    started = time.monotonic()
    require_playwright()  # fails (never skips) without playwright or /usr/bin/chromium
    appliance.start()
    assert appliance.setup_code
    shots = Screenshots(tmp_path, viewport)
    watch = PageWatch(appliance.url)
    # After logout, the page's status poll answers 401 (and the script reloads into login).
    watch.expect(401, r"^/api/")
    with chromium() as browser:
        context = browser.new_context(**VIEWPORTS[viewport], locale="es-MX",
                                      base_url=appliance.url)
        context.set_default_timeout(15_000)
        watch.attach(context)
        page = context.new_page()

        # 1. First start: / sends to the login, which sends to the setup page (Spanish).
        page.goto("/")
        assert path_of(page) == "/setup", page.url
        assert page.locator("html").get_attribute("lang") == "es-MX"
        assert page.locator("h1").inner_text() == "Primer arranque"
        shots.take(page, "setup")
        page.fill("#setup-form input[name=code]", appliance.setup_code)
        page.fill("#setup-form input[name=username]", USER)
        page.fill("#setup-form input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("#setup-form button[type=submit]")
        assert path_of(page) == "/", page.url
        assert "Lo más reciente" in page.locator("h1").inner_text()
        assert "Aún no hay fotos" in page.locator("#empty").inner_text()
        page.wait_for_selector("#live-status .jobs")  # the status strip is live
        shots.take(page, "recent-empty")
        watch.check("setup", page)

        # 2. Logout ("Salir" reachable on a phone too), then login through the form.
        assert_in_viewport(page, "#logout")
        assert page.locator("#logout").inner_text() == "Salir"
        with page.expect_navigation():
            page.click("#logout")
        assert path_of(page) == "/login", page.url
        page.goto("/")
        assert path_of(page) == "/login", page.url
        assert page.locator("h1").inner_text() == "Iniciar sesión"
        page.fill("#login-form input[name=password]", "no-es-la-clave")
        page.fill("#login-form input[name=username]", USER)
        watch.expect(401, r"^/login$")  # the wrong password, on purpose
        with page.expect_navigation():
            page.click("#login-form button[type=submit]")
        assert "incorrectos" in page.locator("#login-form .error").inner_text()
        shots.take(page, "login-failed")
        page.fill("#login-form input[name=password]", PASSWORD)
        with page.expect_navigation():
            page.click("#login-form button[type=submit]")
        assert path_of(page) == "/", page.url
        assert page.locator("#empty").is_visible()
        watch.check("login", page)

        # 3. A card plugged in shows up live: no reload, no navigation.
        page.evaluate("() => { window.acopioMarker = 'still-here'; }")
        navigations: list[str] = []
        page.on("framenavigated",
                lambda frame: navigations.append(frame.url) if frame == page.main_frame
                else None)
        page.evaluate(RECORD_STATES)
        insert_card(udev_testbed, card_image)
        mounting = page.wait_for_selector(
            "#live-status .device[data-device=sdb1][data-status=mounting]",
            timeout=LIVE_TIMEOUT_S * 1000)
        assert "Montando" in mounting.inner_text()
        assert "EOS_DIGITAL" in mounting.inner_text()
        shots.take(page, "card-mounting")
        safe = page.wait_for_selector(
            "#live-status .device[data-device=sdb1][data-status=safe_to_remove]",
            timeout=LIVE_TIMEOUT_S * 1000)
        assert "Listo para retirar" in safe.inner_text()
        states = page.evaluate("() => window.acopioStates")
        assert states[0] in ("sdb1:detected", "sdb1:mounting"), states
        assert states[-1] == "sdb1:safe_to_remove", states
        assert not {"sdb1:error", "sdb1:removed_early"} & set(states), states
        media = tmp_path / "media"
        assert not [m for m in media.iterdir() if m.is_mount()], "the card is still mounted"
        wait_until(lambda: grid_images_loaded(page) >= CARD_ITEMS,
                   f"{CARD_ITEMS} thumbnails in the live grid", LIVE_TIMEOUT_S,
                   on_timeout=lambda: page.inner_html("main") + "\n" + appliance.log_tail())
        assert page.locator("#grid li").count() == CARD_ITEMS
        assert page.evaluate("() => window.acopioMarker") == "still-here", "the page reloaded"
        assert navigations == [], f"the page navigated: {navigations}"
        assert page.locator("#empty").count() == 0, "the empty-state text stayed"
        titles = set(page.locator("#grid a").evaluate_all("as => as.map(a => a.title)"))
        assert {*EVENT_PHOTOS, VIDEO} <= titles, titles
        assert page.locator("#grid li.kind-video .badge").inner_text() == "Video 0:03"
        shots.take(page, "card-imported")
        watch.check("the live import", page)

        # 4. An item, then previous / next within its activity folder.
        with page.expect_navigation():
            page.click(f"#grid a[title='{EVENT_PHOTOS[0]}']")
        first = page.url
        open_when(page, first, "#preview[src$='/preview']", "the screen preview", appliance)
        assert page.locator("h1.filename").inner_text() == EVENT_PHOTOS[0]
        page.wait_for_function("() => document.getElementById('preview').naturalWidth > 0")
        assert page.locator(".meta .place svg.locator").count() == 1  # GPS shown, offline
        shots.take(page, "item")
        with page.expect_navigation():
            page.click("#next")
        assert page.locator("h1.filename").inner_text() == EVENT_PHOTOS[1]
        shots.take(page, "item-next")
        with page.expect_navigation():
            page.click("#prev")
        assert page.url == first
        with page.expect_navigation():
            page.click("#next")
        with page.expect_navigation():
            page.click("#next")
        assert page.locator("h1.filename").inner_text() == VIDEO
        watch.check("item pages", page)

        # 5. The video proxy plays.
        open_when(page, page.url, "video#player", "the video proxy", appliance)
        page.wait_for_function(
            "() => document.getElementById('player').readyState >= 1")
        page.evaluate("""async () => {
            const v = document.getElementById('player');
            v.muted = true;
            await v.play();
        }""")
        page.wait_for_function(
            "() => { const v = document.getElementById('player');"
            " return !v.error && v.currentTime > 0.5; }", timeout=20_000)
        assert page.evaluate("() => document.getElementById('player').error") is None
        duration = page.evaluate("() => document.getElementById('player').duration")
        assert 2.5 <= duration <= 3.5, duration
        shots.take(page, "video")
        page.evaluate("() => document.getElementById('player').pause()")
        watch.check("video playback", page)

        # 6. Search by part of a file name.
        assert_in_viewport(page, "nav.main a[href='/buscar']")
        with page.expect_navigation():
            page.click("nav.main a[href='/buscar']")
        page.fill("#search-form input[name=q]", "0004")
        with page.expect_navigation():
            page.click("#search-form button[type=submit]")
        assert "q=0004" in page.url
        titles = page.locator("#grid a").evaluate_all("as => as.map(a => a.title)")
        assert titles == [EVENT_PHOTOS[1]], titles
        wait_until(lambda: grid_images_loaded(page) == 1, "the search result's thumbnail", 10)
        shots.take(page, "search")
        watch.check("search", page)

        # 7. English, then back to Spanish (the footer's select submits by itself).
        search_url = page.url
        with page.expect_navigation():
            page.select_option("footer select[name=language]", "en")
        assert page.url == search_url  # same page, other language
        assert page.locator("html").get_attribute("lang") == "en"
        assert page.locator("nav.main a[href='/']").inner_text() == "Latest"
        assert page.locator("#logout").inner_text() == "Log out"
        shots.take(page, "english")
        with page.expect_navigation():
            page.select_option("footer select[name=language]", "es-MX")
        assert page.locator("html").get_attribute("lang") == "es-MX"
        assert page.locator("nav.main a[href='/']").inner_text() == "Lo más reciente"
        watch.check("language", page)

        # 8. More pictures arrive (a phone's, dropped into the hot folder) while "Lo más
        # reciente" is open with the card's: the grid grows, again without a reload.
        page.goto("/")
        assert page.locator("#grid li").count() == CARD_ITEMS
        # The server's grid; the script's below must show the same (the video's badge too).
        assert page.locator("#grid li.kind-video .badge").inner_text() == "Video 0:03"
        page.evaluate("() => { window.acopioMarker = 'still-here-2'; }")
        navigations.clear()
        sample("iptc.jpg", appliance.data_dir / "inbox" / INBOX_PHOTO)
        wait_until(lambda: grid_images_loaded(page) >= CARD_ITEMS + 1,
                   f"{CARD_ITEMS + 1} thumbnails in the live grid", LIVE_TIMEOUT_S,
                   on_timeout=lambda: page.inner_html("main") + "\n" + appliance.log_tail())
        assert page.evaluate("() => window.acopioMarker") == "still-here-2", "the page reloaded"
        assert navigations == [], f"the page navigated: {navigations}"
        titles = page.locator("#grid a").evaluate_all("as => as.map(a => a.title)")
        assert titles[0] == INBOX_PHOTO and len(titles) == CARD_ITEMS + 1, titles
        assert page.locator("#grid li.kind-video .badge").inner_text() == "Video 0:03"
        shots.take(page, "inbox-arrived")
        watch.check("the second live import", page)

        # 9. Logout: the login page, and the old session is gone for good.
        old_session = next(c for c in context.cookies() if c["name"] == "acopio_session")
        assert_in_viewport(page, "#logout")
        with page.expect_navigation():
            page.click("#logout")
        assert path_of(page) == "/login", page.url
        assert not [c for c in context.cookies() if c["name"] == "acopio_session"]
        shots.take(page, "logged-out")
        # Back to the page left behind: whether the browser shows it from its cache or asks
        # the server, it ends on the login page (the status poll meets a 401 and reloads).
        page.go_back()
        page.wait_for_url(re.compile(r"/login"), timeout=15_000)
        page.goto("/")
        assert path_of(page) == "/login", page.url
        assert page.locator("#login-form").is_visible()
        # The old session cookie, replayed, opens nothing: it ended on the server.
        replay = browser.new_context(base_url=appliance.url)
        replay.add_cookies([old_session])
        assert replay.request.get("/api/me").status == 401
        assert replay.request.get("/", max_redirects=0).status == 302
        replay.close()
        watch.check("logout", page)
        context.close()

    assert watch.hosts == {urlsplit(appliance.url).netloc}, watch.hosts
    assert appliance.stop() == 0, appliance.failure("the appliance did not exit cleanly")
    print(f"{viewport}: {time.monotonic() - started:.1f} s, screenshots in {shots.dirs}")
