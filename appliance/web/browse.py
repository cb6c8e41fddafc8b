"""The pages people browse: "Lo más reciente", the archive by month and activity, an
item, search and the box's status. Each page's data also comes from the JSON API (api.py)
through the same query objects."""

from __future__ import annotations

import logging
import math
from datetime import UTC, date, datetime, timedelta
from typing import Any

from flask import (
    Blueprint,
    Response,
    abort,
    current_app,
    g,
    redirect,
    render_template,
    request,
    url_for,
)

from appliance.agenda import SIN_ACTIVIDAD
from appliance.catalog import is_folder_key
from appliance.query import ItemQuery
from appliance.web import present
from appliance.web.context import web
from appliance.web.security import requires

log = logging.getLogger(__name__)
bp = Blueprint("browse", __name__)

KINDS = ("photo", "raw", "video", "audio", "other")
STATUSES = ("ok", "problems")
PICKS = ("picked", "rejected", "none")  # "none": neither picked nor rejected
APPROVALS = {"yes": True, "no": False}
RATINGS = ("0", "1", "2", "3", "4", "5")  # rating_min: rated at least this
# A kit not heard from in this long is marked on the hub's status page: at an event a kit
# with a link syncs every few minutes, so a day without contact is worth a phone call.
KIT_QUIET = timedelta(days=1)


def page_number() -> int:
    try:
        page = int(request.args.get("page", "1"))
    except ValueError:
        abort(400)
    if page < 1 or page > 100_000:
        abort(400)
    return page


def paged(query: ItemQuery, page: int) -> dict[str, Any]:
    size = query.limit
    found, total = web().index.search(query)
    pages = max(1, math.ceil(total / size))
    return {"items": present.items(found), "total": total, "page": page, "pages": pages,
            "size": size}


def _query(page: int, **filters: Any) -> ItemQuery:
    size = web().config.web.page_size
    return ItemQuery(limit=size, offset=(page - 1) * size, **filters)


@bp.get("/")
@requires("view")
def recent() -> str:
    page = page_number()
    result = paged(_query(page, order="imported"), page)
    return render_template("recent.html", result=result, live=page == 1,
                           latest=web().index.latest_import() or "")


@bp.get("/archivo")
@requires("view")
def months() -> str:
    return render_template("months.html", months=web().index.months())


@bp.get("/archivo/<month>")
@requires("view")
def month(month: str) -> str:
    present.check_month(month)
    folders = web().index.folders(month)
    if not folders:
        abort(404)
    return render_template("month.html", month=month, folders=folders)


@bp.get("/archivo/<month>/<folder>")
@requires("view")
def folder(month: str, folder: str) -> str:
    present.check_month(month)
    key = f"{month.replace('-', '/')}/{folder}"
    if not is_folder_key(key):
        abort(404)
    page = page_number()
    result = paged(_query(page, folder=key, order="captured"), page)
    if result["total"] == 0:
        abort(404)
    info = next((f for f in web().index.folders(month) if f["folder"] == key), None)
    return render_template("folder.html", month=month, folder=info, key=key, result=result)


@bp.get("/item/<sha256>")
@requires("view")
def item(sha256: str) -> str:
    present.check_sha256(sha256)
    record = web().index.get(sha256)
    if record is None:
        abort(404)
    previous, following = web().index.neighbours(sha256)
    activity = web().agenda.get(record["activity"]) if record.get("activity") else None
    return render_template("item.html", item=present.item(record, history=True),
                           previous=previous,
                           following=following, activity=activity)


def search_query(page: int, limit: int) -> ItemQuery:
    """The search form's fields (and the API's): bad values are a 400, never a 500."""
    args = request.args
    kind = args.get("kind") or None
    status = args.get("status") or None
    if kind is not None and kind not in KINDS:
        abort(400, f"unknown kind {kind!r}")
    if status is not None and status not in STATUSES:
        abort(400, f"unknown status {status!r}")
    pick = args.get("pick") or None
    if pick is not None and pick not in PICKS:
        abort(400, f"unknown pick {pick!r}: use one of {', '.join(PICKS)}")
    rating_min = args.get("rating_min") or None
    if rating_min is not None and rating_min not in RATINGS:
        abort(400, "rating_min must be a whole number from 0 to 5")
    approved = args.get("approved") or None
    if approved is not None and approved not in APPROVALS:
        abort(400, "approved must be yes or no")
    month = args.get("month") or None
    if month is not None and not present.MONTH.match(month):
        abort(400, "month must be YYYY-MM")  # a bad filter is a 400 (check_month's 404 is
        # for a month in the path)
    try:
        date_from = date.fromisoformat(args["from"]) if args.get("from") else None
        date_to = date.fromisoformat(args["to"]) if args.get("to") else None
    except ValueError:
        abort(400, "dates must be YYYY-MM-DD")
    q = args.get("q", "")[:500]
    return ItemQuery(q=q, kind=kind, status=status, month=month,
                     activity=args.get("activity") or None,
                     camera=args.get("camera") or None, area=args.get("area") or None,
                     date_from=date_from, date_to=date_to, pick=pick,
                     rating_min=int(rating_min) if rating_min is not None else None,
                     approved=APPROVALS[approved] if approved is not None else None,
                     order="imported",
                     limit=limit, offset=(page - 1) * limit)


@bp.post("/item/<sha256>/traer")
@requires("download")
def fetch_back(sha256: str) -> Response:
    """Bring an evicted original back from the hub, then show the item again."""
    from sync.kit.client import HubRefused, HubUnreachable, SyncError
    from sync.kit.evict import FetchError
    from sync.kit.evict import fetch_back as fetch

    present.check_sha256(sha256)
    if web().index.get(sha256) is None:
        abort(404)
    try:
        fetch(web().config, sha256)
    except (FetchError, SyncError, OSError) as exc:
        log.warning("fetching %s back from the hub failed: %s", sha256[:12], exc)
        # The usual cases at an event said in the screen's language; the rest as it came.
        reason = g.t("item.fetch.unreachable") if isinstance(exc, HubUnreachable) else \
            g.t("item.fetch.refused") if isinstance(exc, HubRefused) else str(exc)
        abort(409, g.t("item.fetch_failed", reason=reason))
    return redirect(url_for("browse.item", sha256=sha256))


@bp.get("/buscar")
@requires("view")
def search() -> str:
    page = page_number()
    searched = any(request.args.get(k) for k in
                   ("q", "kind", "status", "from", "to", "camera", "area", "activity", "month",
                    "pick", "rating_min", "approved"))
    result = paged(search_query(page, web().config.web.page_size), page) if searched else None
    return render_template("search.html", result=result, args=request.args,
                           cameras=web().index.cameras(), areas=web().index.areas(),
                           kinds=KINDS, statuses=STATUSES)


@bp.get("/estado")
@requires("view")
def status() -> str:
    """The box's state; at headquarters (`acopio hub`) its kits instead of devices and sync:
    when each last reached the hub, what it sent, what is still to come from it."""
    kits = None
    if current_app.config.get("ACOPIO_HUB"):
        from sync.hub.web import hub

        kits = hub().kit_summary(items=web().index.kit_counts())
        quiet_from = datetime.now(UTC) - KIT_QUIET
        for kit in kits:
            kit["quiet"] = not kit["revoked"] and (
                kit["last_contact"] is None
                or datetime.fromisoformat(kit["last_contact"]) < quiet_from)
    return render_template("status.html", status=web().status.snapshot(), kits=kits)


def page_url(page: int) -> str:
    """This page's URL with its query string, at another page number."""
    args = {**request.args.to_dict(), "page": page}
    return url_for(request.endpoint or "browse.recent", **(request.view_args or {}), **args)


def page_numbers(page: int, pages: int) -> list[int | None]:
    """The pages a pager links to: the first and last, two either side of this one, and the
    quarters between, so that page 17 of 34 is three taps from the first (None: a gap)."""
    wanted = {1, pages, *range(page - 2, page + 3), *(round(pages * q / 4) for q in (1, 2, 3))}
    shown: list[int | None] = []
    for number in sorted(n for n in wanted if 1 <= n <= pages):
        if shown and shown[-1] is not None and number > shown[-1] + 1:
            shown.append(None)
        shown.append(number)
    return shown


@bp.app_context_processor
def _helpers() -> dict[str, Any]:
    return {"page_url": page_url, "page_numbers": page_numbers,
            "grid_image": present.grid_image,
            "activity_title": _activity_title}


def _activity_title(slug: str) -> str:
    """Read the agenda once per request, however many grid cells ask."""
    if not slug or slug == SIN_ACTIVIDAD:
        return g.t("folder.unsorted")
    titles = g.get("activity_titles")
    if titles is None:
        titles = g.activity_titles = {a.slug: a.title for a in web().agenda.activities()}
    return titles.get(slug, slug)
