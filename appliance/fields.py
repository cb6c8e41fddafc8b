"""The fields people add to a catalog record, with their values before anyone touches it.

Kept apart from appliance.editorial so that the catalog (its migration, and an import that
meets a record again) and the ingest can know them without importing the editing logic.
"""

from __future__ import annotations

from typing import Any

# The fields a person edits.
EDITABLE: dict[str, Any] = {
    "caption": "", "tags": [], "people": [], "credit": "", "place": "",
    "pick": None, "rating": 0,
}
# Set only by approve/withdraw (Dirección).
APPROVAL: dict[str, Any] = {"approved": False, "approved_by": None, "approved_at": None}
# Bookkeeping of edits: the record's revision, the revision each field last changed at (and
# by whom, when), and the history of changes.
BOOKKEEPING: dict[str, Any] = {"revision": 0, "edited": {}, "history": []}
ALL = (*EDITABLE, *APPROVAL, *BOOKKEEPING)


def defaults() -> dict[str, Any]:
    """The editorial fields of a new record (fresh lists and dicts each time)."""
    out: dict[str, Any] = {}
    for table in (EDITABLE, APPROVAL, BOOKKEEPING):
        for key, value in table.items():
            out[key] = value.copy() if isinstance(value, list | dict) else value
    return out


def with_defaults(record: dict[str, Any]) -> dict[str, Any]:
    """A record of schema 1 (before editing existed) brought to schema 2, in place."""
    for key, value in defaults().items():
        record.setdefault(key, value)
    return record
