"""Which card is this, and what was imported from it before.

A card is recognised by its filesystem UUID and label plus a fingerprint of its content:
FAT volume ids are 32 random bits that collide, cameras give every card the same label
("EOS_DIGITAL"), and both can be forged. The fingerprint is a consistent sample of the
SHA-256 of the files read from it (the import computes them anyway); a card seen again
keeps most of its old files, a different card with the same UUID and label shares none.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from tinydb import Query

from appliance import storage

SAMPLE_SIZE = 256
SAME_CARD_OVERLAP = 0.5
# Imports remembered per card, newest kept: the file is rewritten whole at every import, and
# a card in use for years would make it grow without end.
IMPORTS_KEPT = 100


def fingerprint(contents: Iterable[str]) -> list[str]:
    """A bottom-k sample of content hashes: the same files always give the same sample."""
    return sorted(contents)[:SAMPLE_SIZE]


def overlap(a: list[str], b: list[str]) -> float:
    if not a and not b:
        return 1.0
    if not a or not b:
        return 0.0
    # Compare within the range both samples cover, so a card that gained files still matches.
    limit = min(a[-1], b[-1])
    sa = {k for k in a if k <= limit}
    sb = {k for k in b if k <= limit}
    return len(sa & sb) / max(1, min(len(sa), len(sb)))


@dataclass
class Identity:
    card_id: str
    new: bool


class CardHistory:
    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / "cards.json"
        self.tmp = state_dir / "tmp"

    def identify(self, uuid: str, label: str, fstype: str,
                 contents: Iterable[str]) -> Identity:
        sample = fingerprint(contents)
        now = datetime.now(UTC).isoformat()
        with storage.transaction(self.path, self.tmp) as db:
            cards = db.table("cards")
            candidates = cards.search((Query().uuid == uuid) & (Query().label == label))
            best = max(candidates, key=lambda c: overlap(sample, c["sample"]), default=None)
            if best is not None and overlap(sample, best["sample"]) >= SAME_CARD_OVERLAP:
                merged = sorted(set(best["sample"]) | set(sample))[:SAMPLE_SIZE]
                cards.update({"sample": merged, "last_seen": now},
                             Query().card_id == best["card_id"])
                return Identity(best["card_id"], new=False)
            card_id = "card-" + hashlib.sha256(
                f"{uuid}\0{label}\0{secrets.token_hex(8)}".encode()).hexdigest()[:12]
            cards.insert({"card_id": card_id, "uuid": uuid, "label": label, "fstype": fstype,
                          "first_seen": now, "last_seen": now, "sample": sample})
            return Identity(card_id, new=True)

    def record_import(self, entry: dict[str, Any]) -> None:
        with storage.transaction(self.path, self.tmp) as db:
            imports = db.table("imports")
            imports.insert(entry)
            mine = sorted(imports.search(Query().card_id == entry.get("card_id")),
                          key=lambda i: str(i.get("started_at", "")), reverse=True)
            if len(mine) > IMPORTS_KEPT:
                imports.remove(doc_ids=[i.doc_id for i in mine[IMPORTS_KEPT:]])

    def cards(self) -> list[dict[str, Any]]:
        """Every card seen, with its imports, newest first."""
        db = storage.snapshot(self.path)
        imports = db.table("imports").all()
        out = []
        for card in db.table("cards").all():
            mine = sorted((dict(i) for i in imports if i["card_id"] == card["card_id"]),
                          key=lambda i: i["started_at"], reverse=True)
            row = {k: v for k, v in card.items() if k != "sample"}
            row["imports"] = mine
            out.append(row)
        return sorted(out, key=lambda c: c["last_seen"], reverse=True)
