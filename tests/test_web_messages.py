"""What the web pages say when something is refused, and a few safeguards around it: every
message on a screen in the screen's language (Spanish by default, English on request) while
the CLI and the JSON API keep their English; a refused name or password at /setup is not a
guessed code; removing a user asks first; an activity whose title is taken gets a slug of its
own; and the item page offers the web-size copy only to whom it will be given."""

from __future__ import annotations

import html
import itertools
import re
import shutil
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest

from appliance.accounts import AccountError
from appliance.agenda import AgendaError, check_slug
from appliance.datadir import DataDir
from appliance.web.i18n import MESSAGES
from tests.cards import exif_jpeg
from tests.conftest import run_cli
from tests.webclient import PASSWORD, Client, WebApp, form_token, web_app

ES, EN = MESSAGES["es-MX"], MESSAGES["en"]


@pytest.fixture
def web(data_dir: Path) -> Iterator[WebApp]:
    with web_app(data_dir) as built:
        yield built


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A data folder with one photo imported by the real `acopio ingest` and no worker run:
    its thumbnail and preview jobs wait in the queue, and nobody has approved it."""
    root = tmp_path_factory.mktemp("imported")
    data = root / "data"
    DataDir.at(data).ensure()
    exif_jpeg(root / "card/DCIM/100CANON/plaza.jpg", "2026:11:10 10:00:00", "-06:00")
    done = run_cli("--data-dir", data, "ingest", root / "card")
    assert done.returncode == 0, done.stderr.decode()
    return data


@pytest.fixture
def archive(imported: Path, data_dir: Path) -> Iterator[WebApp]:
    shutil.copytree(imported, data_dir, dirs_exist_ok=True,
                    ignore=shutil.ignore_patterns("query.sqlite*"))
    with web_app(data_dir) as built:
        yield built


def text(response: Any) -> str:
    return html.unescape(response.get_data(as_text=True))


def english(browser: Client, page: str = "/") -> None:
    """Choose English as the footer's form does (logged in or not)."""
    token = browser.csrf or form_token(browser.get(page).get_data(as_text=True))
    chosen = browser.post("/idioma", data={"csrf_token": token, "language": "en"})
    assert chosen.status_code == 302


def only_sha(web: WebApp) -> str:
    listed = web.login(web.user("mirada", "photographer").name).get("/api/items").get_json()
    assert len(listed["items"]) == 1, listed
    return listed["items"][0]["sha256"]


# -- 1. refusals in the screen's language ------------------------------------------------


SETUP_REFUSALS = (  # (user name, password, Spanish, English, the CLI's English)
    ("Directora", PASSWORD, "Los nombres de usuario van en minúsculas: use «directora»",
     "User names are lower case: use “directora”", "user names are lower case"),
    ("d", PASSWORD, "El nombre de usuario «d» no es válido", "The user name “d” is not valid",
     "invalid user name"),
    ("directora", "corta", "La contraseña es demasiado corta: use al menos 10 caracteres.",
     "The password is too short: use at least 10 characters.", "too short"),
    ("directora", "a" * 12, "La contraseña es un mismo carácter repetido",
     "The password is one character repeated", "one character repeated"),
)


def test_setup_says_what_is_wrong_with_the_name_or_password_in_spanish(web: WebApp) -> None:
    code = web.ctx.setup.issue()
    browser = web.client()
    token = form_token(browser.get("/setup").get_data(as_text=True))
    for name, password, spanish, _, cli in SETUP_REFUSALS:
        refused = browser.post("/setup", data={"csrf_token": token, "code": code,
                                               "username": name, "password": password})
        assert refused.status_code == 400, name
        assert spanish in text(refused), (name, password)
        assert cli not in text(refused), (name, password)
        # the JSON API (and the CLI) keep the English message
        api = browser.post("/api/setup", json={"code": code, "username": name,
                                               "password": password})
        assert api.status_code == 400 and cli in api.get_json()["message"]
    english(browser, "/setup")
    for name, password, spanish, in_english, _ in SETUP_REFUSALS:
        refused = browser.post("/setup", data={"csrf_token": token, "code": code,
                                               "username": name, "password": password})
        assert refused.status_code == 400
        assert in_english in text(refused) and spanish not in text(refused)
    assert web.ctx.users.count() == 0


def test_the_users_page_says_refusals_in_the_screens_language(web: WebApp) -> None:
    director = web.user_and_login("directora")
    web.user("foto", "photographer")
    cases = (
        ({"username": "foto", "role": "social", "password": PASSWORD},
         "Ya existe un usuario «foto».", "A user “foto” already exists.", "already exists"),
        ({"username": "Foto", "role": "social", "password": PASSWORD},
         "Los nombres de usuario van en minúsculas: use «foto» en lugar de «Foto».",
         "User names are lower case: use “foto” instead of “Foto”.", "lower case"),
        ({"username": "rosa", "role": "social", "password": "corta"},
         "La contraseña es demasiado corta", "The password is too short", "too short"),
    )
    for form, spanish, _, cli in cases:
        refused = director.form("/usuarios", form)
        assert refused.status_code == 400
        assert spanish in text(refused) and cli not in text(refused), form
    english(director)
    for form, spanish, in_english, _ in cases:
        refused = director.form("/usuarios", form)
        assert refused.status_code == 400
        assert in_english in text(refused) and spanish not in text(refused), form
    # the JSON API keeps the English message
    api = director.write("POST", "/api/users", json=cases[0][0])
    assert api.status_code == 400 and "already exists" in api.get_json()["message"]


def test_the_account_page_says_password_rules_in_the_screens_language(web: WebApp) -> None:
    web.user("carla", "assistant")
    browser = web.login("carla")
    for new, spanish, cli in (
            ("corta", "La contraseña es demasiado corta: use al menos 10 caracteres.",
             "too short"),
            ("x" * 11, "La contraseña es un mismo carácter repetido", "repeated")):
        refused = browser.form("/cuenta", {"current": PASSWORD, "new": new})
        assert refused.status_code == 400
        assert spanish in text(refused) and cli not in text(refused)
    wrong = browser.form("/cuenta", {"current": "no-es-esta-1", "new": "otra-clave-segura-2"})
    assert wrong.status_code == 400 and ES["password.wrong"] in text(wrong)
    english(browser)
    refused = browser.form("/cuenta", {"current": PASSWORD, "new": "corta"})
    assert refused.status_code == 400
    assert "The password is too short: use at least 10 characters." in text(refused)
    api = browser.write("POST", "/api/password", json={"current": PASSWORD, "new": "corta"})
    assert api.status_code == 400 and "too short" in api.get_json()["message"]


def test_the_agenda_pages_say_refusals_in_the_screens_language(web: WebApp) -> None:
    director = web.user_and_login("directora")
    backwards = {"title": "Informe", "start": "2026-12-01T15:00", "end": "2026-12-01T14:00"}
    refused = director.form("/agenda", backwards)
    assert refused.status_code == 400
    assert "Revise los datos: la actividad termina antes de empezar." in text(refused)
    assert "ends before" not in text(refused)

    made = director.form("/agenda", {**backwards, "start": "2026-12-01T10:00"})
    assert made.status_code == 303
    clash = director.form("/agenda", {"title": "Otra", "slug": "informe",
                                      "start": "2026-12-02T10:00", "end": "2026-12-02T11:00"})
    assert clash.status_code == 400
    assert "ya existe una actividad con el identificador «informe»." in text(clash)
    assert "already exists" not in text(clash)
    bad_slug = director.form("/agenda", {**backwards, "start": "2026-12-01T10:00",
                                         "slug": "Con Espacios"})
    assert bad_slug.status_code == 400
    assert "el identificador «Con Espacios» no es válido" in text(bad_slug)
    missing = director.form("/agenda", {"title": "Sin fecha", "start": "", "end": ""})
    assert missing.status_code == 400
    assert "Revise los datos: falta Inicio, Fin." in text(missing)
    bad_time = director.form("/agenda", {"title": "x", "start": "mañana", "end": "luego"})
    assert bad_time.status_code == 400
    assert "la fecha y hora «mañana» no es válida" in text(bad_time)

    edited = director.form("/agenda/informe/editar", backwards)
    assert edited.status_code == 400
    assert "Revise los datos: la actividad termina antes de empezar." in text(edited)

    english(director)
    refused = director.form("/agenda", backwards)
    assert "Check the details: the activity ends before it starts." in text(refused)
    clash = director.form("/agenda", {"title": "Otra", "slug": "informe",
                                      "start": "2026-12-02T10:00", "end": "2026-12-02T11:00"})
    assert "an activity with the identifier “informe” already exists." in text(clash)
    # the JSON API keeps the English message
    api = director.write("POST", "/api/agenda", json=backwards)
    assert api.status_code == 400 and "ends before it starts" in api.get_json()["message"]


def test_the_core_keeps_its_english_messages_with_a_code() -> None:
    """The CLI prints str(exc): unchanged. The code is what the web translates."""
    with pytest.raises(AgendaError, match="invalid activity slug") as caught:
        check_slug("Mal")
    assert caught.value.code == "slug_invalid" and caught.value.values == {"slug": "Mal"}
    from appliance.accounts import check_password
    with pytest.raises(AccountError, match="too short: use at least 10") as refused:
        check_password("corta")
    assert refused.value.code == "password_short" and refused.value.values == {"min": 10}


def test_every_error_code_of_the_core_has_a_message(tmp_path: Path) -> None:
    """Each code raised in accounts.py and agenda.py (and the web's agenda checks) is in
    both catalogues, or mapped to a message there."""
    from appliance.web.i18n import ERROR_KEYS

    root = Path(__file__).resolve().parent.parent / "appliance"
    sources = {"account": [root / "accounts.py", root / "web/auth.py"],
               "agenda": [root / "agenda.py", root / "web/agenda.py"]}
    for family, paths in sources.items():
        source = "\n".join(p.read_text() for p in paths)
        # raise AccountError("message" "more message", "code", value=...): every one has a code
        found = re.findall(r'(?:Account|Agenda)Error\(\s*(?:f?"[^"]*"\s*)+,\s*f?"([a-z_{}]+)"',
                           source)
        assert len(found) == len(re.findall(r"raise (?:Account|Agenda)Error\(", source))
        codes = set(found)
        expanded = set()
        for code in codes:
            if "{action}" in code:
                expanded |= {code.replace("{action}", a) for a in ("remove", "demote",
                                                                    "disable")}
            else:
                expanded.add(code)
        assert len(expanded) > 8, (family, expanded)
        for catalogue in (ES, EN):
            missing = {c for c in expanded if ERROR_KEYS.get((family, c),
                                                             f"{family}.error.{c}")
                       not in catalogue}
            assert not missing, (family, missing)


def test_the_status_page_names_jobs_and_their_states(archive: WebApp) -> None:
    browser = archive.user_and_login("ana", "photographer")
    snapshot = archive.ctx.status.snapshot()["jobs"]["by_kind"]
    assert {"thumb", "preview"} <= set(snapshot), snapshot  # queued by the import
    page = text(browser.get("/estado"))
    assert ES["job.kind.thumb"] in page and ES["job.kind.preview"] in page
    assert ES["job.state.queued"] in page and ES["job.state.parked"] in page
    cells = re.findall(r"<td>([^<]*)</td>", page)
    for raw in ("thumb", "preview", "queued", "running", "done", "parked"):
        assert not any(cell.split(" ")[0] == raw for cell in cells), (raw, cells)
    english(browser)
    page = text(browser.get("/estado"))
    assert EN["job.kind.thumb"] in page and EN["job.state.queued"] in page
    for kind in ("thumb", "preview", "poster", "waveform", "audio_proxy", "video_proxy"):
        assert f"job.kind.{kind}" in ES and f"job.kind.{kind}" in EN


# -- 2. a refused name or password at /setup is not a guess -------------------------------


def test_a_refused_name_or_password_does_not_lock_out_the_right_code(web: WebApp) -> None:
    attempts = web.ctx.config.web.login_attempts
    code = web.ctx.setup.issue()
    browser = web.client()
    token = form_token(browser.get("/setup").get_data(as_text=True))
    for n in range(attempts * 2):
        refused = browser.post("/setup", data={
            "csrf_token": token, "code": code, "username": "Directora" if n % 2 else "d",
            "password": "corta" if n % 3 else PASSWORD})
        assert refused.status_code == 400, (n, text(refused))
        api = browser.post("/api/setup", json={"code": code, "username": "directora",
                                               "password": "corta"})
        assert api.status_code == 400, n
    made = browser.post("/setup", data={"csrf_token": token, "code": code,
                                        "username": "directora", "password": PASSWORD})
    assert made.status_code == 302, text(made)
    assert web.ctx.users.get("directora").role == "director"


def test_a_wrong_setup_code_still_counts_as_a_guess(web: WebApp) -> None:
    attempts = web.ctx.config.web.login_attempts
    code = web.ctx.setup.issue()
    assert code is not None
    wrong = "0000-0000-0000" if code != "0000-0000-0000" else "1111-1111-1111"
    browser = web.client()
    token = form_token(browser.get("/setup").get_data(as_text=True))
    form = {"csrf_token": token, "code": wrong, "username": "directora", "password": PASSWORD}
    for _ in range(attempts):
        assert browser.post("/setup", data=form).status_code == 400
    throttled = browser.post("/setup", data={**form, "code": code})
    assert throttled.status_code == 429 and "Retry-After" in throttled.headers
    assert web.ctx.users.count() == 0


# -- 3. removing a user asks first -----------------------------------------------------------


def test_removing_a_user_asks_for_confirmation(web: WebApp) -> None:
    director = web.user_and_login("directora")
    web.user("emilio", "designer")
    page = director.get("/usuarios").get_data(as_text=True)
    form = re.search(r'<form method="post" action="/usuarios/emilio/eliminar"[^>]*>', page)
    assert form, page
    confirm = re.search(r'data-confirm="([^"]+)"', form[0])
    assert confirm and html.unescape(confirm[1]) == ES["users.remove_confirm"].format(
        name="emilio")
    assert "emilio" in confirm[1]
    english(director)
    page = director.get("/usuarios").get_data(as_text=True)
    form = re.search(r'<form method="post" action="/usuarios/emilio/eliminar"[^>]*>', page)
    assert form and html.unescape(form[0]).count(EN["users.remove_confirm"].format(
        name="emilio")) == 1
    # the script asks before any form with data-confirm is sent
    script = (Path(__file__).resolve().parent.parent / "appliance/web/static/app.js"
              ).read_text()
    assert "form.dataset.confirm && !window.confirm(form.dataset.confirm)" in script


# -- 4. an activity whose title is taken gets a slug of its own ------------------------------


def test_a_weekly_activity_gets_a_slug_of_its_own(web: WebApp) -> None:
    director = web.user_and_login("directora")
    weekly = {"title": "Sesión de Cabildo", "area": "Gobierno",
              "start": "2026-11-20T09:00", "end": "2026-11-20T12:00"}
    first = director.form("/agenda", {**weekly, "slug": ""})
    assert first.status_code == 303, text(first)
    assert first.headers["Location"] == "/agenda/sesion-de-cabildo?ok=added"
    second = director.form("/agenda", {**weekly, "start": "2026-11-27T09:00",
                                       "end": "2026-11-27T12:00"})
    assert second.status_code == 303, text(second)
    assert second.headers["Location"] == "/agenda/sesion-de-cabildo-2026-11-27?ok=added"
    # the same day again (an afternoon session), through the JSON API
    third = director.write("POST", "/api/agenda", json={
        **weekly, "start": "2026-11-27T17:00", "end": "2026-11-27T19:00"})
    assert third.status_code == 201, third.get_json()
    assert third.get_json()["slug"] == "sesion-de-cabildo-2026-11-27-2"
    fourth = director.write("POST", "/api/agenda", json={
        **weekly, "start": "2026-12-04T09:00", "end": "2026-12-04T12:00"})
    assert fourth.get_json()["slug"] == "sesion-de-cabildo-2026-12-04"
    agenda = {a.slug: a for a in web.ctx.agenda.activities()}
    assert set(agenda) == {"sesion-de-cabildo", "sesion-de-cabildo-2026-11-27",
                           "sesion-de-cabildo-2026-11-27-2", "sesion-de-cabildo-2026-12-04"}
    assert {a.title for a in agenda.values()} == {"Sesión de Cabildo"}
    assert agenda["sesion-de-cabildo-2026-11-27-2"].start.hour == 17

    # A slug someone gives is theirs: taken is refused, never changed behind their back.
    given = director.write("POST", "/api/agenda", json={**weekly, "slug": "sesion-de-cabildo"})
    assert given.status_code == 400 and "already exists" in given.get_json()["message"]
    # "Sin actividad" as a title: its slug is reserved, so the dated one is used.
    unsorted = director.write("POST", "/api/agenda", json={**weekly, "title": "Sin actividad"})
    assert unsorted.status_code == 201
    assert unsorted.get_json()["slug"] == "sin-actividad-2026-11-20"


def test_a_title_of_only_punctuation_is_refused_clearly(web: WebApp) -> None:
    director = web.user_and_login("directora")
    form = {"title": "¡¡¡", "start": "2026-11-20T09:00", "end": "2026-11-20T12:00"}
    refused = director.form("/agenda", form)
    assert refused.status_code == 400
    page = text(refused)
    assert "Revise los datos: del título «¡¡¡» no sale un identificador" in page
    assert "invalid activity slug" not in page and "''" not in page
    api = director.write("POST", "/api/agenda", json=form)
    assert api.status_code == 400 and api.get_json()["error"] == "agenda"
    assert "invalid activity slug" not in api.get_json()["message"]
    # with a slug of its own it is fine
    made = director.form("/agenda", {**form, "slug": "festejo"})
    assert made.status_code == 303 and web.ctx.agenda.get("festejo").title == "¡¡¡"


def test_slug_candidates_stay_valid_slugs() -> None:
    from appliance.agenda import slug_candidates

    long = "a" * 78 + "-b"
    day = date(2026, 11, 27)
    found = []
    for slug in slug_candidates(long, day):
        found.append(check_slug(slug))
        if len(found) == 12:
            break
    assert found[0] == long
    assert found[1].endswith("-2026-11-27") and len(found[1]) <= 80
    assert found[2].endswith("-2026-11-27-2") and found[11].endswith("-2026-11-27-11")
    assert len(set(found)) == len(found)
    assert list(itertools.islice(slug_candidates("informe", day), 3)) == [
        "informe", "informe-2026-11-27", "informe-2026-11-27-2"]


# -- 5. the web-size copy only for whom it will be given --------------------------------------


def test_the_web_copy_button_follows_the_approval(archive: WebApp) -> None:
    sha = only_sha(archive)
    url = f"/api/items/{sha}/download?variant=web"
    photographer = archive.login("mirada")
    page = text(photographer.get(f"/item/{sha}"))
    assert 'id="download-web"' in page
    assert f'href="{url}"' not in page  # no link to a 409
    assert re.search(r'<button type="button" id="download-web" disabled', page)
    assert ES["item.download_web_pending"] in page
    assert f'href="/original/{sha}"' in page  # the original is for everyone
    assert photographer.get(url).status_code == 409  # what the link would have led to
    english(photographer)
    page = text(photographer.get(f"/item/{sha}"))
    assert EN["item.download_web_pending"] in page and f'href="{url}"' not in page

    # Dirección takes any web copy, approved or not (editing.check_publishable).
    director = archive.user_and_login("directora")
    page = text(director.get(f"/item/{sha}"))
    assert f'href="{url}"' in page and ES["item.download_web_pending"] not in page
    assert director.write("POST", f"/api/items/{sha}/approve").status_code == 200

    page = text(photographer.get(f"/item/{sha}"))
    assert f'href="{url}"' in page and EN["item.download_web_pending"] not in page
    assert "disabled" not in re.search(r"<[^>]*download-web[^>]*>", page)[0]


PROBLEM_CODE = re.compile(
    r'add_problem\(\s*"(\w+)"|_Unusable\(\s*"(\w+)"|"code": "(\w+)",\s*"detail"|'
    r'"code": "(\w+)",\n')


def test_every_problem_an_item_can_have_is_named_in_each_language() -> None:
    """An item page showed "too_large: 12000x9000 = … pixels exceeds …" to a press officer:
    every problem code the import, the thumbnail jobs, the worker or `acopio check` can put
    on an item has a label in each language (the technical detail stays, in small type)."""
    repo = Path(__file__).resolve().parent.parent
    codes = {next(g for g in m.groups() if g)
             for package in ("appliance", "ingest", "sync")
             for source in (repo / package).rglob("*.py")
             for m in PROBLEM_CODE.finditer(source.read_text())}
    assert {"damaged", "too_large", "no_preview", "probe_failed"} <= codes, codes
    for language, messages in MESSAGES.items():
        missing = sorted(c for c in codes if f"problem.{c}" not in messages)
        assert not missing, f"{language}: no label for {missing}"
