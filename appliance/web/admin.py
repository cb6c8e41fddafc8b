"""Users and roles, for Dirección (pages; the same actions are in api.py and the CLI)."""

from __future__ import annotations

import logging

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)

from appliance.accounts import ROLES, AccountError
from appliance.web.auth import account_error
from appliance.web.context import web
from appliance.web.security import requires

log = logging.getLogger(__name__)
bp = Blueprint("admin", __name__)


def _page(message: str | None = None, error: str | None = None, status: int = 200) -> Response:
    return make_response(render_template("users.html", users=web().users.list(), roles=ROLES,
                                         message=message, error=error), status)


@bp.get("/usuarios")
@requires("manage_users")
def users() -> Response:
    return _page()


@bp.post("/usuarios")
@requires("manage_users")
def add() -> Response:
    role = request.form.get("role", "")
    if role not in ROLES:
        abort(400)
    try:
        user = web().users.add(request.form.get("username", "").strip(), role,
                               request.form.get("password", ""))
    except AccountError as exc:
        return _page(error=account_error(exc), status=400)
    log.info("%s created user %s (%s)", g.user.name, user.name, user.role)
    return _page(message=g.t("users.added", name=user.name))


@bp.post("/usuarios/<name>/eliminar")
@requires("manage_users")
def remove(name: str) -> Response:
    if name == g.user.name:
        abort(409)
    try:
        web().users.remove(name)
    except AccountError as exc:
        return _page(error=account_error(exc), status=409)
    web().sessions.end_all(name)
    log.info("%s removed user %s", g.user.name, name)
    return redirect(url_for("admin.users"))


@bp.post("/usuarios/<name>/activo")
@requires("manage_users")
def set_enabled(name: str) -> Response:
    disabled = request.form.get("disabled") == "1"
    if name == g.user.name:
        abort(409)
    try:
        web().users.set_disabled(name, disabled)
    except AccountError as exc:
        return _page(error=account_error(exc), status=409)
    if disabled:
        web().sessions.end_all(name)
    log.info("%s %s user %s", g.user.name, "disabled" if disabled else "enabled", name)
    return redirect(url_for("admin.users"))
