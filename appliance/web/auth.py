"""First start (setup code), login, logout, password and language: pages and JSON API."""

from __future__ import annotations

import logging
import math
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    g,
    jsonify,
    make_response,
    redirect,
    render_template,
    request,
    url_for,
)
from werkzeug.exceptions import TooManyRequests

from appliance.accounts import AccountError, User
from appliance.web import security
from appliance.web.context import web
from appliance.web.i18n import LANGUAGES, error_text
from appliance.web.security import json_object

log = logging.getLogger(__name__)
bp = Blueprint("auth", __name__)

SETUP_THROTTLE_NAME = "\0setup"  # the setup code is guessed per address, not per user name
WRONG_SETUP_CODE = "setup_wrong_code"  # accounts.SetupCode.redeem's AccountError.code


class LoginFailed(Exception):
    """Wrong name or password (which of the two is never said)."""


def _too_many(retry_after: float) -> TooManyRequests:
    exc = TooManyRequests()
    exc.retry_after = math.ceil(retry_after)  # type: ignore[attr-defined]
    return exc


def _attempt_login(name: str, password: str) -> User:
    """Throttled per address and name; the address is the socket's (X-Forwarded-For is
    never trusted: the box has no proxy in front of it)."""
    address = request.remote_addr or "?"
    wait = web().throttle.attempt(address, name)
    if wait > 0:
        log.warning("login for %r from %s throttled (%.0f s)", name, address, wait)
        raise _too_many(wait)
    user = web().users.verify(name, password)
    if user is None:  # counted by attempt()
        log.warning("failed login for %r from %s", name, address)
        raise LoginFailed
    web().throttle.succeeded(address, name)
    log.info("%s logged in from %s", user.name, address)
    return user


def _start_session(user: User, response: Response) -> str:
    session = web().sessions.create(user)
    security.set_session_cookies(response, session)
    return session.csrf


def _text(body: dict[str, Any], key: str) -> str:
    value = body.get(key, "")
    if not isinstance(value, str):
        abort(400, f"{key} must be text")
    return value


@bp.route("/login", methods=["GET", "POST"])
def login() -> Response | str:
    t = g.t
    if web().setup.needed():
        return redirect(url_for("auth.setup"))
    error = t("login.expired") if request.args.get("expired") else None
    status = 200
    name = ""
    retry_after = None
    if request.method == "POST":
        name = request.form.get("username", "").strip()
        try:
            user = _attempt_login(name, request.form.get("password", ""))
        except TooManyRequests as exc:
            retry_after = exc.retry_after  # type: ignore[attr-defined]
            error, status = t("login.throttled", seconds=retry_after), 429
        except LoginFailed:
            error, status = t("login.failed"), 401
        else:
            response = redirect(security.safe_next(request.args.get("next")))
            _start_session(user, response)
            return response
    body = render_template("login.html", error=error, username=name)
    return _with_retry_after(make_response(body, status), retry_after)


def _with_retry_after(response: Response, seconds: int | None) -> Response:
    """A throttled form answers 429 with Retry-After, as the JSON API does."""
    if seconds:
        response.headers["Retry-After"] = str(seconds)
    return response


@bp.post("/api/login")
def api_login() -> Response:
    body = json_object()
    try:
        user = _attempt_login(_text(body, "username"), _text(body, "password"))
    except LoginFailed:
        return security.error_json(401, "login_failed", "wrong user name or password")
    response = jsonify({})
    csrf = _start_session(user, response)
    response.set_data(jsonify({"user": user.to_public(), "csrf_token": csrf}).get_data())
    return response


@bp.post("/logout")
def logout() -> Response:
    response = redirect(url_for("auth.login"))
    _end_session(response)
    return response


@bp.post("/api/logout")
def api_logout() -> Response:
    response = jsonify({"ok": True})
    _end_session(response)
    return response


def _end_session(response: Response) -> None:
    if g.session is not None:
        web().sessions.end(g.session.id)
        log.info("%s logged out", g.session.user)
    security.clear_session_cookies(response)


@bp.get("/api/me")
def api_me() -> Response:
    return jsonify({"user": g.user.to_public(), "csrf_token": g.session.csrf})


def _redeem_setup(code: str, name: str, password: str) -> User:
    address = request.remote_addr or "?"
    wait = web().throttle.attempt(address, SETUP_THROTTLE_NAME)
    if wait > 0:
        raise _too_many(wait)
    try:
        user = web().setup.redeem(code, name, password)
    except AccountError as exc:
        # Only a wrong code is a guess. A refused name or password comes after the code was
        # checked (it was right, and stays valid): counting it would lock the director out.
        if exc.code != WRONG_SETUP_CODE:
            web().throttle.not_a_guess(address, SETUP_THROTTLE_NAME)
        raise
    web().throttle.succeeded(address, SETUP_THROTTLE_NAME)
    log.warning("director account %r created with the setup code from %s", user.name, address)
    return user


@bp.route("/setup", methods=["GET", "POST"])
def setup() -> Response | str:
    t = g.t
    if not web().setup.needed():
        return redirect(url_for("auth.login"))
    error, status, name = None, 200, ""
    retry_after = None
    if request.method == "POST":
        name = request.form.get("username", "").strip()
        try:
            user = _redeem_setup(request.form.get("code", ""), name,
                                 request.form.get("password", ""))
        except TooManyRequests as exc:
            retry_after = exc.retry_after  # type: ignore[attr-defined]
            error, status = t("login.throttled", seconds=retry_after), 429
        except AccountError as exc:
            error, status = _setup_error(exc), 400
        else:
            response = redirect(url_for("browse.recent"))
            _start_session(user, response)
            return response
    body = render_template("setup.html", error=error, username=name)
    return _with_retry_after(make_response(body, status), retry_after)


def _setup_error(exc: AccountError) -> str:
    """The code's failure, or what is wrong with the name or password, in the screen's
    language."""
    return account_error(exc)


def account_error(exc: AccountError) -> str:
    """A refused account operation as a page says it, in the screen's language (the JSON
    API and the CLI keep the English `str(exc)`)."""
    return error_text(g.t, "account", exc)


@bp.post("/api/setup")
def api_setup() -> Response:
    if not web().setup.needed():
        abort(409, "the director account exists already")
    body = json_object()
    try:
        user = _redeem_setup(_text(body, "code"), _text(body, "username"),
                             _text(body, "password"))
    except AccountError as exc:
        return security.error_json(400, "setup", str(exc))
    response = jsonify({})
    csrf = _start_session(user, response)
    response.set_data(jsonify({"user": user.to_public(), "csrf_token": csrf}).get_data())
    return response


@bp.route("/cuenta", methods=["GET", "POST"])
def account() -> Response | str:
    message = error = None
    status = 200
    if request.method == "POST":
        try:
            _change_password(request.form.get("current", ""), request.form.get("new", ""))
        except AccountError as exc:
            error, status = account_error(exc), 400
        else:
            message = g.t("password.changed")
    return make_response(render_template("account.html", message=message, error=error),
                         status)


@bp.post("/api/password")
def api_password() -> Response:
    body = json_object()
    try:
        _change_password(_text(body, "current"), _text(body, "new"))
    except AccountError as exc:
        return security.error_json(400, "password", str(exc))
    return jsonify({"ok": True})


def _change_password(current: str, new: str) -> None:
    """Asks for the current password; every other session of the user ends (the epoch
    moves), and this one is re-issued so the person at the keyboard stays in."""
    address = request.remote_addr or "?"
    wait = web().throttle.attempt(address, g.user.name)
    if wait > 0:
        raise _too_many(wait)
    if web().users.verify(g.user.name, current) is None:  # counted by attempt()
        raise AccountError("the current password is wrong", "current_password_wrong")
    web().throttle.succeeded(address, g.user.name)
    user = web().users.set_password(g.user.name, current, new)
    web().sessions.end_all(user.name)
    fresh = web().sessions.create(user)
    g.session, g.user, g.reissued = fresh, user, fresh
    log.info("%s changed their password; other sessions ended", user.name)


@bp.after_app_request
def _reissue_cookies(response: Response) -> Response:
    if g.get("reissued") is not None:
        security.set_session_cookies(response, g.reissued)
    return response


@bp.post("/idioma")
def language() -> Response:
    choice = request.form.get("language", "")
    if choice not in LANGUAGES:
        abort(400)
    if g.user is not None:
        web().users.set_language(g.user.name, choice)
    response = redirect(security.safe_next(request.form.get("next")))
    response.set_cookie("acopio_lang", choice, max_age=365 * 86400, samesite="Lax",
                        httponly=True, secure=web().config.web.secure_cookies)
    return response
