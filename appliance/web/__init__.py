"""The LAN web UI: a Flask app factory with one blueprint per area, served by waitress.

`create_app(config)` builds everything from the config (no module globals), so tests make a
fresh app per temporary data folder. The core (catalog, ingest, jobs) never imports this
package; the handlers here check the request, call the core and render its answer.
"""

from __future__ import annotations

import logging
from typing import Any

from flask import Flask, Response, g, render_template, request
from markupsafe import Markup
from werkzeug.exceptions import HTTPException, InternalServerError

from appliance.config import Config
from appliance.fields import shown_size
from appliance.fsutil import DISK_REFUSED
from appliance.query.rows import camera_name
from appliance.storage import CorruptStateError, repair_hint
from appliance.web import present, security
from appliance.web.context import EXTENSION, WebContext, web
from appliance.web.i18n import LANGUAGES, Translator

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1024 * 1024  # forms and JSON; the one upload is the kiosk's logo
LANGUAGE_COOKIE = "acopio_lang"


def create_app(config: Config, *, hub: bool = False) -> Flask:
    """The web UI; `hub=True` is headquarters mode (`acopio hub`): the same UI over every
    kit's items, plus the kits' sync protocol under /sync/ (sync.hub.web)."""
    from appliance.web import admin, agenda, api, auth, browse, desk, editing, kiosk, media, reports

    app = Flask(__name__, static_folder="static", template_folder="templates")
    app.config.update(
        MAX_CONTENT_LENGTH=MAX_REQUEST_BYTES,
        SEND_FILE_MAX_AGE_DEFAULT=3600,
        JSON_SORT_KEYS=False,
    )
    app.extensions[EXTENSION] = WebContext.build(config)
    security.install(app)
    app.before_request(_choose_language)
    for blueprint in (auth.bp, browse.bp, media.bp, api.bp, editing.bp, agenda.bp,
                      desk.bp, admin.bp, kiosk.bp, reports.bp):
        app.register_blueprint(blueprint)
    app.config["ACOPIO_HUB"] = hub
    if hub:
        from sync.hub.ledger import Hub
        from sync.hub.web import install

        install(app, Hub(config))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(security.CsrfError, _csrf_error)
    app.register_error_handler(security.HostError, _host_error)
    app.register_error_handler(OSError, _storage_error)
    app.register_error_handler(CorruptStateError, _damaged_state)
    app.jinja_env.globals.update(can=security.can, csrf_token=security.csrf_token,
                                languages=LANGUAGES, camera_name=camera_name,
                                shown_size=shown_size)
    app.jinja_env.finalize = _displayable  # every {{ value }} of every page
    app.context_processor(_template_context)
    return app


def _displayable(value: Any) -> Any:
    """A value as a page prints it: a catalogued name that is not UTF-8 would make the
    whole page a 500 (present.displayable)."""
    if isinstance(value, str):
        shown = present.displayable(value)
        if shown is not value:
            return Markup(shown) if isinstance(value, Markup) else shown
    return value


def _choose_language() -> None:
    user = g.get("user")
    choice = (user.language if user is not None and user.language else None) \
        or request.cookies.get(LANGUAGE_COOKIE) or web().config.kit.language
    g.t = Translator(choice if choice in LANGUAGES else LANGUAGES[0], web().config.zone)


def _template_context() -> dict[str, object]:
    t = g.get("t") or Translator(web().config.kit.language, web().config.zone)
    return {"t": t, "user": g.get("user"), "session": g.get("session"),
            "kit_name": web().config.kit.name}


def _http_error(exc: HTTPException) -> Response:
    status = exc.code or 500
    if security.is_api():
        # A handler's own reason (abort(400, "...")) as it is; Werkzeug's stock English one
        # said in the page's language, for the script that shows it (a 401 mid-edit).
        t = _translator()
        stock = exc.description == type(exc).description and f"error.{status}" in t.messages
        response = security.error_json(status, exc.name.lower().replace(" ", "_"),
                                       t(f"error.{status}") if stock
                                       else exc.description or exc.name)
    else:
        t = _translator()
        key = f"error.{status}"
        message = t(key) if key in t.messages else exc.name
        if status == 409 and exc.description != type(exc).description:
            message = exc.description or message  # a handler's own (translated) reason
        response = _error_page(status, message)
    if status == 429 and getattr(exc, "retry_after", None):
        response.headers["Retry-After"] = str(exc.retry_after)  # type: ignore[attr-defined]
    response.headers["Cache-Control"] = "no-store"
    return response


def _translator() -> Translator:
    """The request's translator (an error may come before _choose_language set it)."""
    t = g.get("t") or Translator(web().config.kit.language, web().config.zone)
    g.t = t
    return t


def _error_page(status: int, message: str) -> Response:
    return Response(render_template("error.html", status=status, message=message),
                    status=status, mimetype="text/html")


def _storage_error(exc: OSError) -> Response:
    """A write the data disk refused (full, or remounted read-only after an error): said as
    such (507 Insufficient Storage), not as an internal error."""
    if exc.errno not in DISK_REFUSED:
        log.exception("%s %s failed", request.method, request.path, exc_info=exc)
        return _http_error(InternalServerError())
    log.error("%s %s: the data disk refused a write: %s", request.method, request.path, exc)
    return _said(507, "disk_full", "error.disk_full")


def _damaged_state(exc: CorruptStateError) -> Response:
    log.error("%s %s: %s; %s", request.method, request.path, exc,
              repair_hint(web().data, exc))
    return _said(503, "damaged_state", "error.damaged_state")


def _said(status: int, code: str, key: str) -> Response:
    t = _translator()
    if security.is_api():
        response = security.error_json(status, code, t(key))
    else:
        response = _error_page(status, t(key))
    response.headers["Cache-Control"] = "no-store"
    return response


def _csrf_error(exc: security.CsrfError) -> Response:
    log.warning("refused %s %s from %s: %s", request.method, request.path,
                request.remote_addr, exc)
    if security.is_api():  # the page's script shows the message: in the page's language
        return security.error_json(403, "csrf", _translator()("error.csrf"))
    return _error_page(403, _translator()("error.csrf"))


def _host_error(exc: security.HostError) -> Response:
    log.warning("refused Host header %r from %s", str(exc), request.remote_addr)
    # Plain text: a rebinding page must learn nothing about the UI.
    return Response("Host no permitido / Host not allowed\n", status=400,
                    mimetype="text/plain", headers={"Cache-Control": "no-store"})
