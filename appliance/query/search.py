"""Searching: what the web UI may ask for (ItemQuery), and the SQL that answers it quickly.

Why apart: this is where speed is won or lost. At 100,000 items a search must come back in a
few milliseconds whatever its filters, which takes more than indexes on each column: SQLite
must never read a table row per match just to count the matches (28 ms for kind=photo &
status=problems) or to check a filter on them. So:

- counting without free text reads one covering index (schema.py: each filter's index
  carries the columns of the filters used with it);
- counting with free text is the FTS's: its facets column holds each item's kind, status,
  camera, pick, approval and rating, so those filters are part of the MATCH; only the
  narrow filters (a stretch of time, an event) are left to SQL, and then the smaller side
  leads;
- a page of many matches walks the order's own index (which carries the filter columns too)
  and stops when the page is full; a page of few matches, or of matches that may lie
  together in time, is sorted (a month's, an event's, a pick's or an approval's straight
  from its own index).

ItemIndex.explain shows the statements a search runs and SQLite's plan for each.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, NamedTuple

from appliance.query.schema import PICKS as _PICK_CODES
from appliance.query.text import facet_token, fts_match, fts_query, rating_facet

KINDS = ("photo", "raw", "video", "audio", "other")
STATUSES = ("problems", "ok")
PICKS = ("picked", "rejected", "none")
ORDERS = ("imported", "captured")
MAX_LIMIT = 500

# A search matching more items than this may walk its order's index rather than sort them.
_WALK_FROM = 1000
# What sorting costs per match, in steps of walking an index (see search).
_SORT_COST = 10
# Free text with a narrow filter: the FTS leads up to this many matches, the filter beyond.
_FTS_LEADS_UP_TO = 3000


@dataclass(frozen=True)
class ItemQuery:
    """What the web UI asks for; every field narrows the result. Invalid values raise
    ValueError when the query is built."""

    q: str = ""  # free text: every word must match, as a prefix, accents and case ignored
    month: str | None = None  # "YYYY-MM", the archive folder's month
    activity: str | None = None  # slug
    folder: str | None = None  # folder key "YYYY/MM/YYYY-MM-DD_slug"
    kind: str | None = None  # photo raw video audio other
    camera: str | None = None  # "Make Model" as ItemIndex.cameras() returns it
    area: str | None = None  # the agenda area of the item's activity
    status: str | None = None  # "problems" | "ok"
    date_from: date | None = None  # inclusive, capture date local to the kit's zone
    date_to: date | None = None
    pick: str | None = None  # "picked" | "rejected" | "none" (neither)
    rating_min: int | None = None  # 0-5: rated at least this (0: any)
    approved: bool | None = None  # approved for publication, or not
    order: str = "imported"  # "imported" newest first | "captured" oldest first
    limit: int = 60
    offset: int = 0

    def __post_init__(self) -> None:
        if self.status is not None and self.status not in STATUSES:
            raise ValueError(f"unknown status {self.status!r}: use one of {STATUSES}")
        if self.pick is not None and self.pick not in PICKS:
            raise ValueError(f"unknown pick {self.pick!r}: use one of {PICKS}")
        if self.rating_min is not None and (
                isinstance(self.rating_min, bool) or not isinstance(self.rating_min, int)
                or not 0 <= self.rating_min <= 5):
            raise ValueError(f"rating_min must be 0..5, not {self.rating_min!r}")
        if self.approved is not None and not isinstance(self.approved, bool):
            raise ValueError(f"approved must be True or False, not {self.approved!r}")
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r}: use one of {ORDERS}")
        if isinstance(self.limit, bool) or not isinstance(self.limit, int) \
                or not 1 <= self.limit <= MAX_LIMIT:
            raise ValueError(f"limit must be 1..{MAX_LIMIT}, not {self.limit!r}")
        if isinstance(self.offset, bool) or not isinstance(self.offset, int) \
                or self.offset < 0:
            raise ValueError(f"offset must be >= 0, not {self.offset!r}")
        for name in ("date_from", "date_to"):
            value = getattr(self, name)
            if value is not None and not isinstance(value, date):
                raise ValueError(f"{name} must be a date, not {value!r}")
        if not isinstance(self.q, str):
            raise ValueError(f"q must be text, not {self.q!r}")


class _Order(NamedTuple):
    by: str  # the ORDER BY
    index: str  # the index that holds the items in that order
    carries: frozenset[str]  # the filter columns that index holds too (and id, as all do)


_EDITORIAL = frozenset({"pick", "rating", "approved"})
_ORDERS = {
    "imported": _Order("imported_ts DESC, captured_ts DESC, sha256", "items_imported",
                       frozenset({"id", "kind", "problems", "camera", "captured_date",
                                  "activity", "month", *_EDITORIAL})),
    "captured": _Order("captured_ts, archive_path, sha256", "items_captured",
                       frozenset({"id", "kind", "problems", "camera", *_EDITORIAL})),
}


class _Filter(NamedTuple):
    column: str  # the items column it checks
    sql: str
    args: tuple[Any, ...]
    # Picks a stretch of time or an event: its items lie together in either order, and its
    # index leads to few enough of them to sort. The others (kind, camera, status, pick,
    # rating, approval) can match most of the archive, and the FTS's facets answer them.
    narrow: bool
    # Its matches, however many, lie all over the archive (kind, camera, status), so that
    # walking an order's index fills a page after a few steps. Not so for a pick, a rating
    # or an approval: people review an event at a time, so its picks may all lie far down
    # the order (their own indexes list them newest first).
    spread: bool = False
    # A broad filter's folder_marks, whose counts add up to its matches (or, `complement`,
    # to the rest of the archive), and its own index, for when it leads.
    marks: tuple[str, ...] = ()
    complement: bool = False
    index: str = ""


# The editorial filters' indexes that list their items newest first (schema.py).
_ORDERED = {"items_pick", "items_approved", "items_rating"}


def search(conn: sqlite3.Connection, query: ItemQuery,
           plans: list[tuple[str, list[str]]] | None = None
           ) -> tuple[list[dict[str, Any]], int]:
    """(records of the page, total) in one read transaction; with `plans`, each statement
    run is added to it with its query plan.

    The total: without free text, the filters counted through a covering index, or, for one
    broad filter alone, its folder_marks added up. With free text, the FTS answers the text
    and the broad filters (kind, status, camera, pick, rating, approval, as facet tokens),
    so its count is the total unless a narrow filter remains; then the FTS leads when it
    matches few items (each looked up by id), and the narrow filter's index when it matches
    many (they become a set its rows are checked in).

    The page: few matches are sorted. Many are found by walking the order's own index and
    keeping the first rows that match, which fills a page long before sorting every match
    would, when that index carries every filter's column (so no row is read).

    A pick, a rating or an approval: SQLite's statistics cannot tell that "picked" is rare
    and "not approved" nearly everything, so without free text or a narrow filter the
    folder_marks say which filter matches fewest items, and its index leads the count. The
    page, newest first, walks a pick's, approval's or rating's own index, which lists only
    its items, in that order, however they lie in the archive.
    """
    def run(sql: str, args: list[Any]) -> sqlite3.Cursor:
        if plans is not None:
            plans.append((sql, [row[3] for row in
                                conn.execute(f"EXPLAIN QUERY PLAN {sql}", args)]))
        return conn.execute(sql, args)

    filters = _filters(query)
    narrow = [f for f in filters if f.narrow]
    text = fts_query(query.q)
    if text is None and query.q.strip():
        return [], 0  # only symbols typed ("🎉", a quote): nothing matches them, not all
    order = _ORDERS[query.order]
    counts: dict[_Filter, int] = {}
    if text is None:
        if narrow:
            # A narrow filter leads: SQLite cannot tell how few items a pick or an approval
            # matches, and its index does not carry the narrow filters' columns.
            filters = [f._replace(sql=f"+{f.sql}") if f.column in _EDITORIAL else f
                       for f in filters]
        where, source = filters, "items"
        if filters and not narrow and (len(filters) == 1 or any(
                f.column in _EDITORIAL for f in filters)):
            counts = _counted(run, filters)
        if len(filters) == 1 and counts:
            total = counts[filters[0]]
        elif counts:
            lead = min(filters, key=lambda f: counts[f])
            total = run(f"SELECT count(*) FROM items INDEXED BY {lead.index} "
                        f"WHERE {_and(filters)}", _args(filters)).fetchone()[0]
            source = f"items INDEXED BY {lead.index}"  # if the page is sorted
        elif filters:
            total = run(f"SELECT count(*) FROM items WHERE {_and(filters)}",
                        _args(filters)).fetchone()[0]
        else:
            total = _all_items(run)
    else:
        match = fts_match(text, _facets(query))
        matched = run("SELECT count(*) FROM fts WHERE fts MATCH ?", [match]).fetchone()[0]
        if not matched:
            return [], 0
        fts_leads = not narrow or matched <= _FTS_LEADS_UP_TO
        # "+id" keeps SQLite from looking each match up: the narrow filter's index leads.
        where = [*narrow, _in_fts(match, "id" if fts_leads else "+id")]
        source = "items NOT INDEXED" if fts_leads else "items"
        total = run(f"SELECT count(*) FROM {source} WHERE {_and(where)}",
                    _args(where)).fetchone()[0] if narrow else matched
    if total <= query.offset:
        return [], total
    wanted = query.offset + query.limit
    if counts and query.order == "imported":
        # Walking a pick's, an approval's or a rating's own index newest first takes about
        # wanted * its items / total steps (all its items at worst); sorting, a step per
        # item of the filter that leads and _SORT_COST per match.
        lead = min(filters, key=lambda f: counts[f])
        walks = [f for f in filters if f.index in _ORDERED]
        best = min(walks, key=lambda f: counts[f], default=None)
        if best is not None and min(counts[best], wanted * counts[best] / total) \
                <= counts[lead] + total * _SORT_COST:
            return _walked(conn, run, best, filters, order, query), total
    # A walk costs at most a step per item in the index, a sort about _SORT_COST steps per
    # match. Matches spread all over the archive fill a page after a few steps; those that
    # may lie together (a narrow filter's, a title word's, a pick's) may be far down the
    # order.
    spread = text is None and all(f.spread for f in filters)
    if (total > _WALK_FROM and {f.column for f in filters} <= order.carries
            and (spread or total * _SORT_COST > _all_items(run))):
        source = f"items INDEXED BY {order.index}"
        if text is not None:
            # Each row walked is checked in the set of the text's matches (quicker to make
            # than one with the facets) and, from the index, against the filters.
            where = [*filters, _in_fts(fts_match(text, []), "id")]
    ids = [row[0] for row in run(
        f"SELECT id FROM {source} WHERE {_and(where)} ORDER BY {order.by} LIMIT ? OFFSET ?",
        [*_args(where), query.limit, query.offset])]
    return records(conn, ids), total


def _walked(conn: sqlite3.Connection, run: Callable[[str, list[Any]], sqlite3.Cursor],
            lead: _Filter, filters: list[_Filter], order: _Order,
            query: ItemQuery) -> list[dict[str, Any]]:
    """The page newest first from the editorial filter `lead`'s own index. A minimum rating
    is a range of that index, each rating's items newest first: one run per rating, merged
    by SQLite (a compound SELECT's ORDER BY merges its parts' orders, sorting none)."""
    others = [f for f in filters if f is not lead]
    if lead.column != "rating":
        sql = (f"SELECT id FROM items INDEXED BY {lead.index} WHERE {_and(filters)} "
               f"ORDER BY {order.by} LIMIT ? OFFSET ?")
        args = _args(filters)
    else:
        part = (f"SELECT id, imported_ts, captured_ts, sha256 FROM items INDEXED BY "
                f"{lead.index} WHERE {_and([lead._replace(sql='rating = ?'), *others])}")
        ratings = range(lead.args[0], 6)
        sql = f"{' UNION ALL '.join([part] * len(ratings))} ORDER BY {order.by} " \
              "LIMIT ? OFFSET ?"
        args = [arg for rating in ratings for arg in (rating, *_args(others))]
    ids = [row[0] for row in run(sql, [*args, query.limit, query.offset])]
    return records(conn, ids)


def _counted(run: Callable[[str, list[Any]], sqlite3.Cursor],
             filters: list[_Filter]) -> dict[_Filter, int]:
    """How many items each filter matches, from the folder_marks, when all are broad."""
    if not all(f.marks for f in filters):
        return {}
    marks = sorted({mark for f in filters for mark in f.marks})
    found = dict(run(f"SELECT mark, sum(count) FROM folder_marks WHERE mark IN "
                     f"({', '.join('?' * len(marks))}) GROUP BY mark", marks).fetchall())
    every = _all_items(run) if any(f.complement for f in filters) else 0
    counts = {}
    for f in filters:
        n = sum(found.get(mark, 0) for mark in f.marks)
        counts[f] = every - n if f.complement else n
    return counts


def _filters(query: ItemQuery) -> list[_Filter]:
    """The SQL conditions of the query's filters (the free text apart)."""
    found = [_Filter(column, f"{column} = ?", (value,), True) for column, value in
             (("month", query.month), ("folder", query.folder), ("activity", query.activity))
             if value is not None]
    if query.area is not None:
        found.append(_Filter("activity", "activity IN (SELECT slug FROM activities "
                             "WHERE area = ?)", (query.area,), True))
    if query.date_from is not None:
        found.append(_Filter("captured_date", "captured_date >= ?",
                             (_day(query.date_from),), True))
    if query.date_to is not None:
        found.append(_Filter("captured_date", "captured_date <= ?",
                             (_day(query.date_to),), True))
    found += [_Filter(column, f"{column} = ?", (value,), False, True, (f"{column}:{value}",),
                      index=f"items_{column}")
              for column, value in (("kind", query.kind), ("camera", query.camera))
              if value is not None]
    if query.status is not None:
        problems = query.status == "problems"
        found.append(_Filter("problems", "problems > 0" if problems else "problems = 0", (),
                             False, True, ("status:problems",), not problems,
                             "items_problems"))
    if query.pick is not None:
        found.append(_Filter("pick", "pick = ?", (_PICK_CODES[query.pick],), False,
                             marks=("pick:picked", "pick:rejected") if query.pick == "none"
                             else (f"pick:{query.pick}",),
                             complement=query.pick == "none", index="items_pick"))
    if query.rating_min:  # 0: any rating
        found.append(_Filter("rating", "rating >= ?", (query.rating_min,), False,
                             marks=(f"rating:{query.rating_min}",), index="items_rating"))
    if query.approved is not None:
        found.append(_Filter("approved", "approved = ?", (int(query.approved),), False,
                             marks=("approved:yes",), complement=not query.approved,
                             index="items_approved"))
    return found


def _in_fts(match: str, column: str) -> _Filter:
    return _Filter("id", f"{column} IN (SELECT rowid FROM fts WHERE fts MATCH ?)", (match,),
                   False)


def _and(filters: list[_Filter]) -> str:
    return " AND ".join(f.sql for f in filters) or "1"


def _args(filters: list[_Filter]) -> list[Any]:
    return [arg for f in filters for arg in f.args]


def _all_items(run: Callable[[str, list[Any]], sqlite3.Cursor]) -> int:
    """How many items the index holds: the folder summaries add up to it."""
    return run("SELECT coalesce(sum(count), 0) FROM folders", []).fetchone()[0]


def _facets(query: ItemQuery) -> list[str]:
    """The facet tokens of the query's broad filters (text.item_facets)."""
    found = [facet_token(name, value) for name, value in
             (("kind", query.kind), ("status", query.status), ("camera", query.camera),
              ("pick", query.pick))
             if value is not None]
    if query.approved is not None:
        found.append(facet_token("approved", "yes" if query.approved else "no"))
    if query.rating_min:
        found.append(rating_facet(query.rating_min))
    return found


def records(conn: sqlite3.Connection, ids: list[int]) -> list[dict[str, Any]]:
    """The stored records of `ids`, in that order."""
    found = {}
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        found.update(conn.execute(
            f"SELECT id, record FROM records WHERE id IN ({','.join('?' * len(chunk))})",
            chunk).fetchall())
    return [json.loads(found[i]) for i in ids if i in found]


def _day(value: date) -> str:
    return (value.date() if isinstance(value, datetime) else value).isoformat()
