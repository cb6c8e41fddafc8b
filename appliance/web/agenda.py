"""The agenda from the web: activities (title, area, place, start, end) and the kit's
current activity. Everyone sees it; Dirección and Auxiliar keep it (`manage_agenda`)."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

from flask import Blueprint, Response, g, jsonify

from appliance.agenda import (
    Activity,
    AgendaError,
    check_slug,
    parse_time,
    slug_candidates,
    slugify,
)
from appliance.web.context import web
from appliance.web.security import error_json, json_object, requires

log = logging.getLogger(__name__)
bp = Blueprint("agenda", __name__, url_prefix="/api/agenda")

TEXT_FIELDS = {"title": 200, "area": 100, "place": 200}
MAX_SLUG_TRIES = 100  # of slug_candidates: the title's, dated, then -2, -3…


def public(activity: Activity) -> dict[str, Any]:
    return activity.to_record()


def parse_fields(body: dict[str, Any], *, partial: bool) -> dict[str, Any]:
    """Title, area, place, start, end from a form or JSON; bad values are AgendaError."""
    zone = web().config.zone
    out: dict[str, Any] = {}
    for key, limit in TEXT_FIELDS.items():
        if key in body:
            value = body[key]
            if not isinstance(value, str) or len(value) > limit:
                raise AgendaError(f"{key}: text of at most {limit} characters",
                                  "text_too_long", field=key, limit=limit)
            out[key] = " ".join(value.split())
    for key in ("start", "end"):
        if key in body:
            if not isinstance(body[key], str):
                raise AgendaError(f"{key}: an ISO 8601 date-time", "time_type", field=key)
            if not body[key].strip():  # a form's field left empty
                if partial:
                    raise AgendaError(f"missing {key}", "missing", fields=[key])
                continue
            out[key] = parse_time(body[key].strip(), zone)
    if not partial:
        missing = [k for k in ("title", "start", "end") if not out.get(k)]
        if missing:
            raise AgendaError(f"missing {', '.join(missing)}", "missing", fields=missing)
    return out


def create(body: dict[str, Any]) -> Activity:
    """Add an activity. A slug given is used as it is (taken: refused); without one it is
    made from the title, and when that is taken (a weekly "Sesión de Cabildo") from the
    title and the start date, then -2, -3… (agenda.slug_candidates)."""
    fields = parse_fields(body, partial=False)
    given = body.get("slug") or ""
    if not isinstance(given, str):
        raise AgendaError("slug: text", "slug_type")
    given = given.strip()
    if given:
        candidates: Iterable[str] = [check_slug(given)]
    else:
        base = slugify(fields["title"])
        if not base:
            raise AgendaError(f"no slug can be made from the title {fields['title']!r}: use "
                              "letters or digits in it, or give a slug", "title_no_slug",
                              title=fields["title"])
        day = fields["start"].astimezone(web().config.zone).date()
        candidates = slug_candidates(base, day)
    for tries, slug in enumerate(candidates, start=1):
        activity = Activity(slug=slug, title=fields["title"], start=fields["start"],
                            end=fields["end"], area=fields.get("area", ""),
                            place=fields.get("place", ""))
        last = bool(given) or tries >= MAX_SLUG_TRIES
        if not last and web().agenda.get(slug) is not None:
            continue  # taken: no need to lock the agenda to hear it
        try:
            web().agenda.add(activity)
        except AgendaError as exc:
            # Taken by someone else a moment ago, or "sin-actividad" (reserved): the next.
            if last or exc.code not in ("exists", "slug_reserved"):
                raise
            continue
        log.info("%s added activity %s", g.user.name, activity.slug)
        return activity
    raise AssertionError("unreachable: slug_candidates never ends")


@bp.get("")
@requires("view")
def listing() -> Response:
    return jsonify({"activities": [public(a) for a in web().agenda.activities()],
                    "current": web().agenda.current()})


@bp.post("")
@requires("manage_agenda")
def add() -> Response:
    try:
        activity = create(json_object())
    except AgendaError as exc:
        return error_json(400, "agenda", str(exc))
    response = jsonify(public(activity))
    response.status_code = 201
    return response


@bp.patch("/<slug>")
@requires("manage_agenda")
def change(slug: str) -> Response:
    try:
        changes = parse_fields(json_object(), partial=True)
        activity = web().agenda.update(check_slug(slug), **changes)
    except AgendaError as exc:
        return error_json(404 if exc.code == "no_activity" else 400, "agenda", str(exc))
    log.info("%s changed activity %s", g.user.name, slug)
    return jsonify(public(activity))


@bp.delete("/<slug>")
@requires("manage_agenda")
def remove(slug: str) -> Response:
    try:
        web().agenda.remove(check_slug(slug))
    except AgendaError as exc:
        return error_json(404, "agenda", str(exc))
    log.info("%s removed activity %s", g.user.name, slug)
    return jsonify({"ok": True})


@bp.post("/current")
@requires("manage_agenda")
def set_current() -> Response:
    """`{"activity": SLUG or null}`: where cards that match no agenda window are filed."""
    slug = json_object().get("activity")
    if slug is not None and (not isinstance(slug, str) or web().agenda.get(slug) is None):
        return error_json(400, "agenda", "activity: a slug of the agenda, or null")
    web().agenda.set_current(slug)
    log.info("%s set the current activity to %s", g.user.name, slug)
    return jsonify({"current": slug})
