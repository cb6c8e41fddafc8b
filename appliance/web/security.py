"""The checks every request passes before a handler runs (design decision 9).

Order matters: the Host header first (a DNS-rebinding page must learn nothing, not even
whether it is logged in), then the session, then "is anyone logged in", then CSRF for
anything that writes. Handlers state the permission they need with `@requires`; the role
table lives in appliance.accounts so the CLI and later the hub share it.

Two cookies: `acopio_session` (HttpOnly; the server-side session's id) and `acopio_csrf`
(readable by the page's script, which echoes it in `X-CSRF-Token`). Before login the CSRF
cookie is a random value the login and setup forms echo back (double submit); the JSON login
needs `Content-Type: application/json`, which a cross-site form cannot send.
"""

from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from functools import wraps
from typing import Any, TypeVar

from flask import Flask, Response, abort, g, jsonify, redirect, request, url_for

from appliance.accounts import Session, User, allowed
from appliance.web.context import web
from appliance.web.hosts import host_allowed

SESSION_COOKIE = "acopio_session"
CSRF_COOKIE = "acopio_csrf"
CSRF_HEADER = "X-CSRF-Token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Reachable without logging in. Everything else refuses an anonymous request.
PUBLIC_ENDPOINTS = frozenset({
    "static", "auth.login", "auth.setup", "auth.api_login", "auth.api_setup",
    "auth.language",
    # The kiosk screen, public like the mural beside it: approved items only (web/kiosk.py).
    "kiosk.mural", "kiosk.api_mural", "kiosk.media", "kiosk.logo",
})
# Blueprints that authenticate each request with a Bearer token of their own (the hub's
# /sync/ protocol, registered only in headquarters mode), not with the session cookie.
TOKEN_BLUEPRINTS = frozenset({"sync"})
CSP = ("default-src 'self'; img-src 'self' data:; media-src 'self'; style-src 'self'; "
       "script-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'; "
       "form-action 'self'")

F = TypeVar("F", bound=Callable[..., Any])


class CsrfError(Exception):
    pass


class HostError(Exception):
    pass


def is_api() -> bool:
    return request.path.startswith(("/api/", "/sync/"))  # /sync/: the hub (sync.hub.web)


def requires(permission: str) -> Callable[[F], F]:
    """Refuse (403) a logged-in user whose role lacks `permission`."""
    allowed("director", permission)  # an unknown permission fails at import, not at a request

    def decorate(view: F) -> F:
        @wraps(view)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            user: User | None = g.get("user")
            if user is None:
                abort(401)
            if not allowed(user.role, permission):
                abort(403)
            return view(*args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


def can(permission: str) -> bool:
    """For templates: show a button only to those who may press it."""
    user: User | None = g.get("user")
    return user is not None and allowed(user.role, permission)


def load_session() -> None:
    g.session = None
    g.user = None
    session_id = request.cookies.get(SESSION_COOKIE)
    if not session_id:
        return
    session: Session | None = web().sessions.get(session_id)
    if session is None:
        g.session_expired = True
        return
    user = web().users.get(session.user)
    if user is None or user.disabled:
        return
    g.session = session
    g.user = user


def check_csrf() -> None:
    if request.method in SAFE_METHODS:
        return
    sent = request.headers.get(CSRF_HEADER) or request.form.get("csrf_token", "")
    session: Session | None = g.get("session")
    if session is not None:
        expected = session.csrf
    elif request.endpoint in ("auth.api_login", "auth.api_setup"):
        if not request.is_json:
            raise CsrfError("JSON login needs Content-Type: application/json")
        return
    else:
        expected = request.cookies.get(CSRF_COOKIE, "")
    if not expected or not sent or not hmac.compare_digest(sent, expected):
        raise CsrfError("missing or wrong CSRF token")


def before_request() -> Response | None:
    if not host_allowed(request.host, web().allowed_hosts):
        raise HostError(request.host)
    if request.blueprint in TOKEN_BLUEPRINTS:
        return None  # a kit's Bearer token, checked by the blueprint; no cookies, no CSRF
    load_session()
    if g.user is None and request.endpoint not in PUBLIC_ENDPOINTS:
        if is_api() or request.endpoint is None:
            abort(401)
        if request.method not in SAFE_METHODS:
            abort(401)
        target = request.full_path if request.query_string else request.path
        return redirect(url_for("auth.login", next=target,
                                expired=1 if g.get("session_expired") else None))
    check_csrf()
    return None


def pre_login_csrf_token() -> str:
    """The double-submit token of the login and setup forms (set as a cookie too)."""
    token = request.cookies.get(CSRF_COOKIE) if g.get("session") is None else None
    if not token or len(token) < 32:
        token = g.get("new_csrf") or secrets.token_urlsafe(32)
        g.new_csrf = token
    return token


def csrf_token() -> str:
    """For forms: the session's token, or before login the double-submit one."""
    session: Session | None = g.get("session")
    return session.csrf if session is not None else pre_login_csrf_token()


def safe_next(target: str | None) -> str:
    """Only a path on this box: never `//evil.example` or `https://...`. Control characters
    and white space are refused too: browsers drop tabs and newlines from a URL, so
    `/<TAB>/evil.example` would become `//evil.example`, and a newline cannot go in a header."""
    if not target or not target.startswith("/") or target.startswith("//") \
            or "\\" in target or any(c <= " " or c == "\x7f" for c in target):
        return url_for("browse.recent")
    return target


def set_session_cookies(response: Response, session: Session) -> None:
    secure = web().config.web.secure_cookies
    response.set_cookie(SESSION_COOKIE, session.id, httponly=True, samesite="Lax",
                        secure=secure, path="/")
    response.set_cookie(CSRF_COOKIE, session.csrf, httponly=False, samesite="Strict",
                        secure=secure, path="/")


def clear_session_cookies(response: Response) -> None:
    response.delete_cookie(SESSION_COOKIE, path="/")
    response.delete_cookie(CSRF_COOKIE, path="/")


def after_request(response: Response) -> Response:
    headers = response.headers
    headers.setdefault("Content-Security-Policy", CSP)
    headers.setdefault("X-Content-Type-Options", "nosniff")
    headers.setdefault("X-Frame-Options", "DENY")
    headers.setdefault("Referrer-Policy", "same-origin")
    if g.get("new_csrf"):
        response.set_cookie(CSRF_COOKIE, g.new_csrf, httponly=False, samesite="Strict",
                            secure=web().config.web.secure_cookies, path="/")
    if "Cache-Control" not in headers:
        headers["Cache-Control"] = "private, no-cache"
    if (request.method in ("GET", "HEAD") and response.status_code == 200
            and not response.direct_passthrough and not response.is_streamed
            and response.mimetype in ("text/html", "application/json")):
        response.add_etag()
        response.make_conditional(request)
    return response


def json_object() -> dict[str, Any]:
    """The request's JSON body, which must be an object; anything else is a 400."""
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        abort(400, "expected a JSON object")
    return body


def error_json(status: int, code: str, message: str) -> Response:
    response = jsonify({"error": code, "message": message})
    response.status_code = status
    return response


def install(app: Flask) -> None:
    app.before_request(before_request)
    app.after_request(after_request)
