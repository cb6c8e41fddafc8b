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

# Sync with headquarters (README "Metadata both ways"): what the import found belongs to the
# kit that imported the item and never changes; what people edit, the approval and the
# filing merge per field, last writer wins by hybrid logical clock (`edited[field]["hlc"]`).
# Fields that only make sense together merge together: the approval (who approved, when,
# and whether) and the filing (the folder and its activity) each come whole from one side.
IMPORT_FACTS: tuple[str, ...] = (
    "sha256", "size", "kind", "original_name", "source_path", "captured_at", "date_source",
    "camera", "gps", "orientation", "rotation", "width", "height", "duration", "problems",
    "imported_at", "import_id",
)
FILING: dict[str, Any] = {"folder": None, "activity": None}
MERGED: tuple[str, ...] = (*EDITABLE, *APPROVAL, *FILING)
MERGE_GROUPS: tuple[tuple[str, ...], ...] = (
    *((name,) for name in EDITABLE), tuple(APPROVAL), tuple(FILING),
)
# Each replica's own: where the file is on this box (follows `folder`) and why it is there.
LOCAL: tuple[str, ...] = ("archive_path", "filed_by")


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


def shown_size(record: dict[str, Any]) -> tuple[int, int] | None:
    """(width, height) as the item is seen: `width` and `height` are the stored pixels, which
    a portrait phone photo (EXIF orientation 5-8) or video (rotation 90/270) holds turned."""
    width, height = record.get("width"), record.get("height")
    if not isinstance(width, int) or not isinstance(height, int) or width <= 0 or height <= 0:
        return None
    rotation = record.get("rotation")
    turned = record.get("orientation") in (5, 6, 7, 8) or (
        isinstance(rotation, int) and rotation % 180 == 90)
    return (height, width) if turned else (width, height)
