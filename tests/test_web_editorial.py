"""The editorial desk in the web UI (issue 6), on a real imported archive: the item page's
editor and who sees it, edits through the API and the page's form (escaped on the page, with
their history), conflicts between two editors, selections, approval, re-filing, the agenda
pages, an activity's items, the ZIP of a selection as a plain form post, and the screens'
text in both languages. Roles are refused on the server (pages and API alike)."""

from __future__ import annotations

import html
import io
import json
import re
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from appliance.accounts import ROLES, allowed
from appliance.web.i18n import LANGUAGES, MESSAGES, Translator
from tests.conftest import REPO
from tests.webclient import (
    ACTIVITY,
    IN_ACTIVITY,
    Client,
    Library,
    WebApp,
    build_library,
    web_app,
)

TEMPLATES = REPO / "appliance" / "web" / "templates"
SCRIPT = REPO / "appliance" / "web" / "static" / "app.js"
ES = MESSAGES["es-MX"]
FOLDER_URL = "/archivo/2026-11/2026-11-10_sesion-de-cabildo"
HOSTILE = '<script>alert("pie")</script> Cabildo & "pueblo"'


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> Library:
    return build_library(tmp_path_factory.mktemp("library"))


@pytest.fixture
def web(library: Library, data_dir: Path) -> Iterator[WebApp]:
    """An app on a private copy of the real imported archive."""
    library.copy_to(data_dir)
    with web_app(data_dir) as built:
        yield built


def text(response: Any) -> str:
    return response.get_data(as_text=True)


def item(browser: Client, sha: str) -> dict[str, Any]:
    got = browser.get(f"/api/items/{sha}")
    assert got.status_code == 200, text(got)
    return got.get_json()


def escaped(value: str) -> str:
    """As Jinja's autoescape writes it."""
    return html.escape(value).replace("&quot;", "&#34;").replace("&#x27;", "&#39;")


def links(page: str) -> list[str]:
    return re.findall(r'href="/item/([0-9a-f]{64})"', page)


def no_inline_code(page: str, where: str) -> None:
    """The policy forbids inline scripts and styles: none may be written."""
    assert not re.search(r"\sstyle=", page), where
    assert not re.search(r"\son[a-z]+=", page), where
    for tag in re.findall(r"<script\b[^>]*>", page):
        assert " src=" in tag or 'type="application/json"' in tag, (where, tag)


# -- the item page -------------------------------------------------------------------------


def test_the_editor_is_shown_to_editors_and_approval_to_the_director(
        web: WebApp, library: Library) -> None:
    photo, video = library.sha["plaza.jpg"], library.sha["clip.mp4"]
    for role in ROLES:
        browser = web.user_and_login(f"u-{role}", role)
        page = text(browser.get(f"/item/{photo}"))
        edits, approves = allowed(role, "edit_items"), allowed(role, "approve")
        assert ('id="edit"' in page) == edits, role
        assert ('id="refile"' in page) == edits, role
        assert ('id="approval-form"' in page) == approves, role
        assert (ES["edit.keys"] in page) == edits, role
        assert ES["approval.not_approved"] in page  # everyone sees the state
        assert ES["history.empty"] in page
        assert f'href="/original/{photo}"' in page
        # a photo: its web copy for those who approve, or once it is approved
        assert (f'href="/api/items/{photo}/download?variant=web"' in page) == approves, role
        assert "variant=web" not in text(browser.get(f"/item/{video}"))  # not for a video
        no_inline_code(page, role)
        if edits:
            assert '<option value="Comunicación Social">' in page  # the credit presets
            assert ES["edit.rights"].format(rights="Todos los derechos reservados.") in page
            assert f'name="base_revision" value="{item(browser, photo)["revision"]}"' in page
            # re-filing offers the agenda's activities and "Sin actividad", the current one
            # chosen
            assert re.search(r'<option value="sesion-de-cabildo" selected>Sesión de Cabildo',
                             page)


def test_an_edit_shows_escaped_on_the_page_with_its_history(web: WebApp,
                                                            library: Library) -> None:
    browser = web.user_and_login("luis", "photographer")
    sha = library.sha["plaza.jpg"]
    base = item(browser, sha)["revision"]
    saved = browser.write("PATCH", f"/api/items/{sha}", json={
        "caption": HOSTILE, "tags": ["Cabildo", "sesión"], "people": ["Ana López"],
        "credit": "Comunicación Social", "place": "Sala de Cabildo", "pick": "picked",
        "rating": 4, "base_revision": base})
    assert saved.status_code == 200, text(saved)
    assert web.ctx.index.refresh(force=True) == 0  # in the index already, the shard not read
    body = saved.get_json()
    assert body["revision"] == base + 1 and body["caption"] == HOSTILE
    assert body["history"][-1]["by"] == "luis"

    # At once (no waiting for the index to catch up): the page, escaped.
    page = text(browser.get(f"/item/{sha}"))
    no_inline_code(page, "item")
    assert "<script>alert" not in page
    assert f'<figcaption class="caption" id="shown-caption" >{escaped(HOSTILE)}</figcaption>' \
        in page
    assert f'<textarea name="caption" id="caption" rows="3" maxlength="2000">{escaped(HOSTILE)}' \
        in page
    assert f'name="was_caption" value="{escaped(HOSTILE)}"' in page
    assert 'name="tags" value="Cabildo, sesión"' in page and "Ana López" in page
    assert f'name="base_revision" value="{base + 1}"' in page
    assert 'class="mark picked"' in page and "★4" in page
    assert 'data-pick="picked"\n            class="pick" aria-pressed="true"' in page
    # the history: who, what, when
    history = page[page.index('id="history"'):]
    assert "<strong>luis</strong>" in history and ES["history.action.edit"] in history
    for field in ("caption", "tags", "people", "credit", "place", "pick", "rating"):
        assert ES[f"field.{field}"] + ":" in history, field
    assert f"<ins>{escaped(HOSTILE)}</ins>" in history
    assert f"<del>{ES['history.empty_value']}</del>" in history
    # the grid marks the cell
    grid = text(browser.get(FOLDER_URL))
    cell = grid[grid.index(f'data-sha="{sha}"'):]
    cell = cell[:cell.index("</li>")]
    assert 'class="mark picked"' in cell and "★4" in cell
    assert "<script>alert" not in grid


def test_the_item_form_works_without_the_script(web: WebApp, library: Library) -> None:
    browser = web.user_and_login("luis", "photographer")
    sha = library.sha["cabildo.jpg"]
    revision = item(browser, sha)["revision"]
    shown = {"was_caption": "", "was_tags": "", "was_people": "", "was_credit": "",
             "was_place": "", "base_revision": str(revision)}
    form = {**shown, "caption": "Pleno del\r\nCabildo", "tags": "pleno, cabildo,, Pleno",
            "people": "", "credit": "", "place": ""}
    done = browser.form(f"/item/{sha}/editar", form)
    assert done.status_code == 303 and done.headers["Location"] == f"/item/{sha}?ok=saved"
    assert web.ctx.index.refresh(force=True) == 0  # in the index already, the shard not read
    got = item(browser, sha)
    assert got["caption"] == "Pleno del\nCabildo" and got["tags"] == ["pleno", "cabildo"]
    assert got["credit"] == "" and got["revision"] == revision + 1
    assert ES["item.saved"] in text(browser.get(done.headers["Location"]))

    # the pick and star buttons are submit buttons of the same form
    shown = {"was_caption": "Pleno del\nCabildo", "was_tags": "pleno, cabildo",
             "was_people": "", "was_credit": "", "was_place": "",
             "base_revision": str(revision + 1)}
    same = {"caption": "Pleno del\r\nCabildo", "tags": "pleno, cabildo", "people": "",
            "credit": "", "place": ""}
    assert browser.form(f"/item/{sha}/editar", {**shown, **same, "pick": "rejected"}
                        ).status_code == 303
    assert browser.form(f"/item/{sha}/editar", {**shown, **same, "rating": "3"}
                        ).status_code == 303
    got = item(browser, sha)
    assert got["pick"] == "rejected" and got["rating"] == 3
    assert got["caption"] == "Pleno del\nCabildo"  # untouched fields were not sent
    assert [h["changes"].keys() for h in got["history"][-2:]] == [{"pick": 0}.keys(),
                                                                  {"rating": 0}.keys()]

    refused = browser.form(f"/item/{sha}/editar", {**shown, "rating": "9"})
    assert refused.status_code == 400 and "rating" in text(refused)
    assert ES["edit.invalid"].split("{")[0] in text(refused)
    assert browser.form(f"/item/{sha}/editar", {"base_revision": "x"}).status_code == 400
    assert browser.form("/item/" + "0" * 64 + "/editar", {"caption": "x"}).status_code == 404

    designer = web.user_and_login("diseno", "designer")
    assert designer.form(f"/item/{sha}/editar", {"caption": "no"}).status_code == 403
    assert designer.write("PATCH", f"/api/items/{sha}", json={"caption": "no"}
                          ).status_code == 403
    assert item(browser, sha)["caption"] == "Pleno del\nCabildo"


def test_a_stale_edit_of_the_same_field_is_a_conflict_naming_who_what_and_when(
        web: WebApp, library: Library) -> None:
    luis = web.user_and_login("luis", "photographer")
    ana = web.user_and_login("ana", "social")
    sha = library.sha["gps.jpg"]
    base = item(ana, sha)["revision"]

    assert luis.write("PATCH", f"/api/items/{sha}",
                      json={"caption": "Luis escribió esto", "base_revision": base}
                      ).status_code == 200
    stale = ana.write("PATCH", f"/api/items/{sha}",
                      json={"caption": "Ana escribió otra cosa", "base_revision": base})
    assert stale.status_code == 409
    body = stale.get_json()
    assert body["error"] == "conflict" and body["revision"] == base + 1
    assert body["fields"]["caption"]["value"] == "Luis escribió esto"
    assert body["fields"]["caption"]["by"] == "luis" and body["fields"]["caption"]["at"]
    # another field from the same stale page merges
    merged = ana.write("PATCH", f"/api/items/{sha}",
                       json={"place": "Zócalo", "base_revision": base})
    assert merged.status_code == 200
    assert merged.get_json()["caption"] == "Luis escribió esto"
    assert merged.get_json()["place"] == "Zócalo"

    # The same through the page's form: a 409 page saying who changed what, and when,
    # keeping what Ana typed; saving again overwrites.
    form = {"was_caption": "", "was_tags": "", "was_people": "", "was_credit": "",
            "was_place": "", "base_revision": str(base), "caption": "La versión de Ana",
            "tags": "", "people": "", "credit": "", "place": ""}
    conflict = ana.form(f"/item/{sha}/editar", form)
    assert conflict.status_code == 409
    page = text(conflict)
    clock = Translator("es-MX", web.ctx.config.zone).time(body["fields"]["caption"]["at"])
    assert f"luis cambió el pie de foto a «Luis escribió esto» a las {clock}" in page
    assert ES["edit.conflict"] in page and ES["edit.overwrite"] in page
    assert ">La versión de Ana</textarea>" in page  # what she typed is kept
    assert 'name="was_caption" value="Luis escribió esto"' in page
    assert f'name="base_revision" value="{base + 2}"' in page
    assert 'name="was_place" value="Zócalo"' in page
    # "Save mine anyway": the form as the page now holds it
    again = {**form, "was_caption": "Luis escribió esto", "was_place": "Zócalo",
             "place": "Zócalo", "base_revision": str(base + 2)}
    assert ana.form(f"/item/{sha}/editar", again).status_code == 303
    got = item(ana, sha)
    assert got["caption"] == "La versión de Ana" and got["place"] == "Zócalo"

    # English
    ana.form("/idioma", {"language": "en", "next": "/"})
    stale_page = text(ana.form(f"/item/{sha}/editar", {**form, "caption": "otra"}))
    assert "ana changed the caption to “La versión de Ana” at" in stale_page


def test_saving_mine_anyway_keeps_the_fields_i_never_touched(
        web: WebApp, library: Library) -> None:
    """The 409 page refilled every field from the posted form, while its `was_` fields came
    from the fresh record: a field Luis never touched (Ana's new tags) then read as changed,
    and "Guardar los míos de todos modos" wiped Ana's tags, of which he was never told."""
    import html
    import re

    sha = library.sha["plaza.jpg"]
    ana = web.user_and_login("ana", "photographer")
    luis = web.user_and_login("luis", "social")
    stale = text(luis.get(f"/item/{sha}"))
    assert ana.write("PATCH", f"/api/items/{sha}", json={
        "caption": "Ana: pie", "tags": ["cabildo", "sesión"],
        "base_revision": item(ana, sha)["revision"]}).status_code == 200

    def posted(page: str) -> dict[str, str]:
        """What the page's item form posts as it stands (no script)."""
        found = dict(re.findall(r'<input type="hidden" name="(\w+)" value="([^"]*)"', page))
        found["caption"] = re.search(r'<textarea name="caption"[^>]*>([^<]*)<', page)[1]
        for key in ("tags", "people", "credit", "place"):
            found[key] = re.search(rf'<input name="{key}"[^>]*value="([^"]*)"', page, re.S)[1]
        return {k: html.unescape(v) for k, v in found.items()}

    conflict = luis.form(f"/item/{sha}/editar", {**posted(stale), "caption": "Luis: pie"})
    assert conflict.status_code == 409
    page = text(conflict)
    assert ">Luis: pie</textarea>" in page  # what he typed is kept
    assert re.search(r'<input name="tags"[^>]*value="cabildo, sesión"', page)  # Ana's, shown
    assert luis.form(f"/item/{sha}/editar", posted(page)).status_code == 303
    got = item(ana, sha)
    assert got["caption"] == "Luis: pie" and got["tags"] == ["cabildo", "sesión"], got


def test_a_selection_leaves_alone_what_someone_changed_since_the_grid_was_shown(
        web: WebApp, library: Library) -> None:
    """Eva's grid was loaded before Ana captioned a photo; Eva's "Describir" on a selection
    holding it answered "Listo: 2 elementos." and Ana's caption was gone, unseen by both."""
    a, b = library.sha["plaza.jpg"], library.sha["cabildo.jpg"]
    ana = web.user_and_login("ana", "photographer")
    eva = web.user_and_login("eva", "assistant")
    shown = {sha: item(eva, sha)["revision"] for sha in (a, b)}  # as her grid drew them
    assert ana.write("PATCH", f"/api/items/{a}", json={
        "caption": "Alcaldesa firma el convenio", "tags": ["convenio"],
        "base_revision": shown[a]}).status_code == 200
    answer = eva.write("POST", "/api/items/batch", json={
        "sha256": [a, b], "changes": {"caption": "Sesión de Cabildo"},
        "base_revisions": shown})
    assert answer.status_code == 200
    (left,) = answer.get_json()["conflicts"]
    assert left["sha256"] == a and left["fields"]["caption"]["by"] == "ana"
    assert item(eva, a)["caption"] == "Alcaldesa firma el convenio"
    assert item(eva, b)["caption"] == "Sesión de Cabildo"
    # A field Ana did not change merges: a rating on the same stale selection applies.
    answer = eva.write("POST", "/api/items/batch", json={
        "sha256": [a, b], "changes": {"rating": 4}, "base_revisions": shown})
    assert answer.get_json()["conflicts"] == [] and item(eva, a)["rating"] == 4
    for bad in ({a: "3"}, {a: True}, ["x"]):
        assert eva.write("POST", "/api/items/batch", json={
            "sha256": [a], "changes": {"rating": 1}, "base_revisions": bad}).status_code == 400
    # Without revisions (the CLI, an older page): last writer wins, as before.
    assert eva.write("POST", "/api/items/batch", json={
        "sha256": [a], "changes": {"caption": "Otra"}}).get_json()["conflicts"] == []
    assert item(eva, a)["caption"] == "Otra"
    assert ES["select.changed_meanwhile"].startswith("{count} cambiaron mientras tanto")


def test_refusals_of_an_edit_or_a_move_are_said_in_spanish(
        web: WebApp, library: Library) -> None:
    """"Revise los datos: tags: each entry at most 64 characters", and a move to an unknown
    activity pointing a phone user at `acopio agenda list`: the core's English reached the
    Spanish screens."""
    sha = library.sha["plaza.jpg"]
    ana = web.user_and_login("ana", "photographer")
    long_tag = "x" * 65
    page = text(ana.form(f"/item/{sha}/editar", {"tags": long_tag, "was_tags": ""}))
    assert "Revise los datos: Etiquetas: cada uno tiene como máximo 64 caracteres." in page
    assert "each entry" not in page
    answer = ana.write("PATCH", f"/api/items/{sha}", json={"rating": 9})
    assert answer.status_code == 400
    assert answer.get_json()["message"] == "la calificación va de 0 a 5 estrellas."
    answer = ana.write("POST", "/api/items/refile", json={"sha256": [sha],
                                                          "activity": "no-existe"})
    assert answer.status_code == 400
    assert answer.get_json()["message"] == "la actividad «no-existe» no está en la agenda."
    ana.form("/idioma", {"language": "en", "next": "/"})
    answer = ana.write("POST", "/api/items/batch", json={"sha256": [sha],
                                                         "changes": {"people": [long_tag]}})
    assert answer.get_json()["message"] == "People: each at most 64 characters."


def test_an_approval_vouches_for_what_the_director_saw(web: WebApp, library: Library) -> None:
    """Dirección's page showed "Inauguración del parque"; an editor changed it to a draft;
    "Aprobar" approved the draft, unseen. Now the approval carries the page's revision and a
    caption, tags, people, credit or place changed since by someone else is a conflict."""
    import re

    sha, other = library.sha["plaza.jpg"], library.sha["cabildo.jpg"]
    editor = web.user_and_login("eva", "social")
    director = web.user_and_login("dora", "director")
    assert editor.write("PATCH", f"/api/items/{sha}", json={
        "caption": "Inauguración del parque"}).status_code == 200
    page = text(director.get(f"/item/{sha}"))
    shown = int(re.search(r'id="approval-form".*?name="base_revision" value="(\d+)"', page,
                          re.S)[1])
    assert editor.write("PATCH", f"/api/items/{sha}", json={
        "caption": "BORRADOR no publicar"}).status_code == 200

    refused = director.write("POST", f"/api/items/{sha}/approve",
                             json={"base_revision": shown})
    assert refused.status_code == 409 and refused.get_json()["error"] == "conflict"
    assert refused.get_json()["fields"]["caption"]["value"] == "BORRADOR no publicar"
    assert item(director, sha)["approved"] is False
    # The page without its script: the same, said on the page, in Spanish.
    answer = director.form(f"/item/{sha}/aprobacion", {"approved": "1",
                                                       "base_revision": str(shown)})
    assert answer.status_code == 409
    assert ES["approval.changed"] in text(answer) and "BORRADOR no publicar" in text(answer)
    assert item(director, sha)["approved"] is False
    # A grid's selection: that one is left, the other approved.
    bases = {sha: shown, other: item(director, other)["revision"]}
    answer = director.write("POST", "/api/items/approval", json={
        "sha256": [sha, other], "approved": True, "base_revisions": bases})
    assert [c["sha256"] for c in answer.get_json()["conflicts"]] == [sha]
    assert item(director, other)["approved"] is True and item(director, sha)["approved"] is False
    # Her own edit since is no reason; seen afresh, it approves.
    fresh = item(director, sha)["revision"]
    assert director.write("PATCH", f"/api/items/{sha}", json={"place": "Parque Hidalgo"}
                          ).status_code == 200
    assert director.write("POST", f"/api/items/{sha}/approve",
                          json={"base_revision": fresh}).status_code == 200
    assert item(director, sha)["approved"] is True


def test_a_selection_is_edited_at_once(web: WebApp, library: Library) -> None:
    browser = web.user_and_login("luis", "photographer")
    shas = [library.sha["plaza.jpg"], library.sha["cabildo.jpg"]]
    grid = text(browser.get(FOLDER_URL))
    no_inline_code(grid, "grid")
    assert 'id="selection"' in grid and 'action="/descargas/zip"' in grid
    for sha in shas:
        assert f'<input type="checkbox" name="sha256" value="{sha}"' in grid
    assert 'data-batch="pick"' in grid and 'data-batch="describe"' in grid
    assert 'data-batch="refile"' in grid and 'data-batch="approve"' not in grid
    assert 'name="variant" value="original"' in grid and 'name="variant" value="web"' in grid
    assert grid.count('href="/item/') == len(IN_ACTIVITY)  # a checkbox adds no link

    done = browser.write("POST", "/api/items/batch", json={"sha256": shas, "changes": {
        "pick": "rejected", "rating": 2, "add_tags": ["pleno"], "credit": "Comunicación Social",
        "people": ["Ana", "Luis"], "place": "Sala de Cabildo", "caption": "Sesión"}})
    assert done.status_code == 200, text(done)
    assert web.ctx.index.refresh(force=True) == 0  # in the index already, the shard not read
    assert [i["sha256"] for i in done.get_json()["items"]] == shas
    for sha in shas:
        got = item(browser, sha)
        assert got["pick"] == "rejected" and got["rating"] == 2 and "pleno" in got["tags"]
        assert got["people"] == ["Ana", "Luis"] and got["caption"] == "Sesión"
    grid = text(browser.get(FOLDER_URL))
    assert grid.count('class="mark rejected"') == 2 and grid.count(">★2</span>") == 2

    designer = web.user_and_login("diseno", "designer")
    page = text(designer.get(FOLDER_URL))
    assert 'data-batch="pick"' not in page and 'name="variant" value="original"' in page
    assert designer.write("POST", "/api/items/batch", json={
        "sha256": shas, "changes": {"pick": None}}).status_code == 403
    assert item(browser, shas[0])["pick"] == "rejected"


def test_the_director_approves_and_withdraws_others_are_refused(web: WebApp,
                                                                library: Library) -> None:
    director = web.user_and_login("directora", "director")
    sha, other = library.sha["plaza.jpg"], library.sha["cabildo.jpg"]
    page = text(director.get(f"/item/{sha}"))
    assert 'name="approved" value="1"' in page and ES["approval.approve"] in page

    done = director.form(f"/item/{sha}/aprobacion", {"approved": "1"})
    assert done.status_code == 303 and done.headers["Location"] == f"/item/{sha}?ok=approved"
    assert web.ctx.index.refresh(force=True) == 0  # in the index already, the shard not read
    got = item(director, sha)
    assert got["approved"] and got["approved_by"] == "directora"
    page = text(director.get(f"/item/{sha}"))
    assert "Aprobado por directora el " in page
    assert 'name="approved" value="0"' in page and ES["approval.withdraw"] in page
    assert ES["history.action.approve"] in page[page.index('id="history"'):]
    assert 'class="mark approved"' in text(director.get(FOLDER_URL))

    assert director.write("POST", f"/api/items/{sha}/withdraw").status_code == 200
    assert "Aprobación retirada por directora el " in text(director.get(f"/item/{sha}"))
    assert director.write("POST", "/api/items/approval",
                          json={"sha256": [sha, other], "approved": True}).status_code == 200
    assert all(item(director, s)["approved"] for s in (sha, other))
    assert director.form(f"/item/{sha}/aprobacion", {"approved": "sí"}).status_code == 400

    for role in ("photographer", "social", "designer", "assistant"):
        browser = web.user_and_login(f"u-{role}", role)
        assert 'id="approval-form"' not in text(browser.get(f"/item/{sha}"))
        assert "Aprobado por directora el " in text(browser.get(f"/item/{sha}"))
        assert browser.form(f"/item/{sha}/aprobacion", {"approved": "0"}).status_code == 403
        assert browser.write("POST", f"/api/items/{sha}/withdraw").status_code == 403
        assert browser.write("POST", "/api/items/approval",
                             json={"sha256": [sha], "approved": False}).status_code == 403
        assert 'data-batch="approve"' not in text(browser.get(FOLDER_URL))
    assert item(director, sha)["approved"]


def test_refiling_from_the_item_page_and_the_api(web: WebApp, library: Library) -> None:
    browser = web.user_and_login("luis", "photographer")
    clip = library.sha["clip.mp4"]
    assert item(browser, clip)["activity"] == "sin-actividad"

    moved = browser.form(f"/item/{clip}/mover", {"activity": ACTIVITY.slug})
    assert moved.status_code == 303, text(moved)
    assert web.ctx.index.refresh(force=True) == 0  # both shards followed from the records
    got = item(browser, clip)
    assert got["activity"] == ACTIVITY.slug
    assert got["folder"] == "2026/11/2026-11-10_sesion-de-cabildo"
    assert (web.data_dir / got["archive_path"]).is_file()
    assert moved.headers["Location"] == f"/item/{clip}?ok=refiled"
    page = text(browser.get(moved.headers["Location"]))
    assert ES["item.refiled_ok"] in page and "Sesión de Cabildo · Gobierno" in page
    assert clip in links(text(browser.get(f"/agenda/{ACTIVITY.slug}")))
    assert ES["history.action.refile"] in page[page.index('id="history"'):]

    back = browser.write("POST", "/api/items/refile", json={"sha256": [clip], "activity": None})
    assert back.status_code == 200, text(back)
    assert web.ctx.index.refresh(force=True) == 0
    assert item(browser, clip)["activity"] == "sin-actividad"
    assert clip in links(text(browser.get("/agenda/sin-actividad")))

    unknown = browser.form(f"/item/{clip}/mover", {"activity": "no-existe"})
    assert unknown.status_code == 400 and ES["refile.unknown"] in text(unknown)
    designer = web.user_and_login("diseno", "designer")
    assert designer.form(f"/item/{clip}/mover", {"activity": ACTIVITY.slug}).status_code == 403
    assert item(browser, clip)["activity"] == "sin-actividad"


# -- the agenda ------------------------------------------------------------------------------


def test_director_and_assistant_keep_the_agenda_with_its_pages(web: WebApp) -> None:
    for n, role in enumerate(("director", "assistant")):
        browser = web.user_and_login(f"u-{role}", role)
        page = text(browser.get("/agenda"))
        assert 'id="add-activity"' in page and 'id="current-form"' in page
        assert "Sesión de Cabildo" in page
        no_inline_code(page, "agenda")

        added = browser.form("/agenda", {
            "title": f"Informe <b>anual</b> {n}", "area": "Presidencia", "place": "Teatro",
            "start": "2026-12-01T10:00", "end": "2026-12-01T13:30", "slug": ""})
        assert added.status_code == 303, text(added)
        slug = f"informe-b-anual-b-{n}"
        assert added.headers["Location"] == f"/agenda/{slug}?ok=added"
        page = text(browser.get(added.headers["Location"]))
        assert ES["agenda.ok.added"] in page
        assert f"Informe &lt;b&gt;anual&lt;/b&gt; {n}" in page and "<b>anual" not in page
        assert "Presidencia" in page and "Teatro" in page
        assert 'value="2026-12-01T10:00"' in page and 'value="2026-12-01T13:30"' in page
        assert ES["agenda.no_items"] in page
        activity = web.ctx.agenda.get(slug)
        assert activity is not None and activity.start.hour == 10
        assert activity.start.utcoffset().total_seconds() == -6 * 3600  # the kit's zone

        changed = browser.form(f"/agenda/{slug}/editar", {
            "title": "Informe anual", "area": "Presidencia", "place": "Palacio",
            "start": "2026-12-01T11:00", "end": "2026-12-01T14:00"})
        assert changed.status_code == 303
        assert changed.headers["Location"] == f"/agenda/{slug}?ok=saved"
        activity = web.ctx.agenda.get(slug)
        assert activity.title == "Informe anual" and activity.place == "Palacio"
        assert activity.start.hour == 11

        wrong = browser.form(f"/agenda/{slug}/editar", {
            "title": "Informe anual", "start": "2026-12-01T15:00", "end": "2026-12-01T14:00"})
        assert wrong.status_code == 400 and ES["agenda.error.ends_before_start"] in text(wrong)
        assert 'value="2026-12-01T15:00"' in text(wrong)  # what was typed stays
        assert web.ctx.agenda.get(slug).start.hour == 11

        current = browser.form("/agenda/actual", {"activity": slug, "next": f"/agenda/{slug}"})
        assert current.status_code == 303 and current.headers["Location"] == f"/agenda/{slug}"
        assert web.ctx.agenda.current() == slug
        assert ES["agenda.clear_current"] in text(browser.get(f"/agenda/{slug}"))
        assert browser.form("/agenda/actual", {"activity": "no-existe"}).status_code == 400
        assert browser.form("/agenda/actual", {"activity": ""}).status_code == 303
        assert web.ctx.agenda.current() is None

        removed = browser.form(f"/agenda/{slug}/eliminar")
        assert removed.status_code == 303 and removed.headers["Location"] == "/agenda?ok=removed"
        assert web.ctx.agenda.get(slug) is None
        assert browser.get(f"/agenda/{slug}").status_code == 404
        assert browser.form(f"/agenda/{slug}/eliminar").status_code == 404

    browser = web.user_and_login("directora", "director")
    bad = browser.form("/agenda", {"title": "Sin fecha", "start": "", "end": ""})
    assert bad.status_code == 400 and 'value="Sin fecha"' in text(bad)
    clash = browser.form("/agenda", {"title": "Otra", "slug": ACTIVITY.slug,
                                     "start": "2026-12-02T10:00", "end": "2026-12-02T11:00"})
    assert clash.status_code == 400
    assert ES["agenda.error.exists"].format(slug=ACTIVITY.slug) in text(clash)


def test_the_agenda_is_read_only_for_other_roles(web: WebApp) -> None:
    before = web.ctx.agenda.activities()
    web.ctx.agenda.set_current(ACTIVITY.slug)
    for role in ("photographer", "social", "designer"):
        browser = web.user_and_login(f"u-{role}", role)
        page = text(browser.get("/agenda"))
        assert 'id="add-activity"' not in page and 'id="current-form"' not in page
        assert ES["agenda.readonly"] in page and "Sesión de Cabildo" in page
        activity = text(browser.get(f"/agenda/{ACTIVITY.slug}"))
        assert 'id="edit-activity"' not in activity and 'id="remove-activity"' not in activity
        for url, data in (("/agenda", {"title": "x", "start": "2026-12-01T10:00",
                                        "end": "2026-12-01T11:00"}),
                          (f"/agenda/{ACTIVITY.slug}/editar", {"title": "Robado"}),
                          (f"/agenda/{ACTIVITY.slug}/eliminar", {}),
                          ("/agenda/actual", {"activity": ""})):
            assert browser.form(url, data).status_code == 403, (role, url)
        assert browser.write("POST", "/api/agenda", json={
            "title": "x", "start": "2026-12-01T10:00", "end": "2026-12-01T11:00"}
        ).status_code == 403
    assert web.ctx.agenda.activities() == before and web.ctx.agenda.current() == ACTIVITY.slug


def test_an_activity_page_lists_its_items_by_capture_time(library: Library,
                                                          data_dir: Path) -> None:
    library.copy_to(data_dir)
    with web_app(data_dir, {"ACOPIO_WEB_PAGE_SIZE": "3"}) as web:
        browser = web.user_and_login("ana", "designer")
        first = browser.get(f"/agenda/{ACTIVITY.slug}")
        assert first.status_code == 200
        page = text(first)
        assert "Sesión de Cabildo" in page and "Gobierno" in page and "Sala de Cabildo" in page
        assert "4 elementos" in page
        second = text(browser.get(f"/agenda/{ACTIVITY.slug}?page=2"))
        order = [library.sha[n] for n in IN_ACTIVITY]
        assert links(page) == order[:3] and links(second) == order[3:]
        assert 'rel="next" href="/agenda/sesion-de-cabildo?page=2"' in page

        unsorted = text(browser.get("/agenda/sin-actividad"))
        assert set(links(unsorted)) == {library.sha["clip.mp4"], library.sha["flower.jpg"]}
        assert ES["agenda.unsorted_hint"] in unsorted
        assert browser.get("/agenda/no-existe").status_code == 404
        assert browser.get(f"/agenda/{ACTIVITY.slug}?page=0").status_code == 400
        # the folder and the item link to the activity's page
        assert f'href="/agenda/{ACTIVITY.slug}"' in text(browser.get(FOLDER_URL))
        item_page = text(browser.get(f"/item/{library.sha['plaza.jpg']}"))
        assert f'<a href="/agenda/{ACTIVITY.slug}">Sesión de Cabildo · Gobierno</a>' in item_page


# -- a ZIP of a selection ------------------------------------------------------------------


def test_the_zip_of_a_selection_is_a_plain_form_post_streamed(web: WebApp,
                                                              library: Library) -> None:
    browser = web.user_and_login("ana", "designer")  # every role may download
    names = ("plaza.jpg", "cabildo.jpg")
    shas = [library.sha[n] for n in names]
    got = browser.post("/descargas/zip", data={"csrf_token": browser.csrf, "sha256": shas,
                                               "variant": "original"})
    assert got.status_code == 200, text(got)
    assert got.is_streamed and got.mimetype == "application/zip"
    assert got.headers["Content-Disposition"].startswith("attachment; filename=")
    assert got.headers["Cache-Control"] == "no-store"
    with zipfile.ZipFile(io.BytesIO(got.get_data())) as archive:
        assert archive.testzip() is None
        members = archive.namelist()
        by_name = {i["original_name"]: i for i in library.items}
        for name in names:
            entry = next(m for m in members if m.endswith(name))
            assert archive.read(entry) == (web.data_dir / by_name[name]["archive_path"]
                                           ).read_bytes()

    # Web-size copies are for publishing: only approved items, unless Dirección asks.
    web_form = {"csrf_token": browser.csrf, "sha256": shas[:1], "variant": "web"}
    refused = browser.post("/descargas/zip", data=web_form)
    assert refused.status_code == 409 and "plaza.jpg" in text(refused)
    one = browser.get(f"/api/items/{shas[0]}/download?variant=web")
    assert one.status_code == 409 and "not approved" in one.get_json()["message"]
    director = web.user_and_login("dora", "director")
    web_copy = director.get(f"/api/items/{shas[0]}/download?variant=web")
    assert web_copy.status_code == 200
    # its caption follows the record: asked again each time, never kept by a shared cache
    assert web_copy.headers["Cache-Control"] == "private, no-cache" and web_copy.headers["ETag"]
    assert director.write("POST", f"/api/items/{shas[0]}/approve").status_code == 200
    web_zip = browser.post("/descargas/zip", data=web_form)
    assert web_zip.status_code == 200
    assert "-web.zip" in web_zip.headers["Content-Disposition"]
    with zipfile.ZipFile(io.BytesIO(web_zip.get_data())) as archive:
        data = archive.read(archive.namelist()[0])
        assert data[:3] == b"\xff\xd8\xff"  # a JPEG

    form = {"csrf_token": browser.csrf, "sha256": shas}
    assert browser.post("/descargas/zip", data={"csrf_token": browser.csrf}).status_code == 400
    assert browser.post("/descargas/zip", data={**form, "variant": "tiff"}).status_code == 400
    assert browser.post("/descargas/zip", data={**form, "sha256": "nada"}).status_code == 400
    assert browser.post("/descargas/zip", data={**form, "sha256": "0" * 64}).status_code == 404
    assert browser.post("/descargas/zip", data={"sha256": shas}).status_code == 403  # CSRF


def test_the_zip_is_limited(library: Library, data_dir: Path) -> None:
    library.copy_to(data_dir)
    with web_app(data_dir, {"ACOPIO_EDITORIAL_ZIP_MAX_ITEMS": "1"}) as web:
        browser = web.user_and_login("ana", "designer")
        shas = [library.sha["plaza.jpg"], library.sha["cabildo.jpg"]]
        got = browser.post("/descargas/zip", data={"csrf_token": browser.csrf, "sha256": shas})
        assert got.status_code == 413


# -- search, text, script ------------------------------------------------------------------


def test_search_offers_the_editorial_filters(web: WebApp) -> None:
    browser = web.user_and_login("ana", "designer")
    page = text(browser.get("/buscar"))
    for name in ("pick", "rating_min", "approved"):
        assert f'<select name="{name}">' in page
    assert ES["search.pick.picked"] in page and ES["search.approved.no"] in page


def test_every_key_the_desk_uses_exists_in_both_languages_and_reaches_the_script(
        web: WebApp) -> None:
    families = {
        "pick.": ("picked", "rejected", "none"), "search.pick.": ("picked", "rejected", "none"),
        "search.approved.": ("yes", "no"),
        "conflict.": ("caption", "tags", "people", "credit", "place", "pick", "rating"),
        "field.": ("caption", "tags", "people", "credit", "place", "pick", "rating",
                   "activity"),
        "history.action.": ("edit", "approve", "withdraw", "refile"),
        "agenda.ok.": ("added", "saved", "removed", "current"),
    }
    used = {prefix + value for prefix, values in families.items() for value in values}
    for template in TEMPLATES.glob("*.html"):
        used.update(re.findall(r"""\bt(?:\.count)?\(\s*["']([^"']+)["']\s*[,)]""",
                               template.read_text()))
    script_keys = set(re.findall(r"""messages\[["']([^"']+)["']\]""", SCRIPT.read_text()))
    used |= script_keys
    for language in LANGUAGES:
        missing = sorted(k for k in used if k not in MESSAGES[language])
        assert not missing, (language, missing)
    # the page hands the script every string it looks up
    browser = web.user_and_login("ana", "photographer")
    page = text(browser.get("/"))
    handed = json.loads(re.search(r'<script type="application/json" id="i18n">(.*?)</script>',
                                  page, re.S)[1])
    wanted = script_keys | {f"conflict.{f}" for f in families["conflict."]}
    assert not sorted(k for k in wanted if k not in handed)
