"""Free text: how words are folded and cut into tokens, and the FTS5 queries built from them.

Why apart: the same rules must hold when an item's text is indexed (rows.py) and when a
search is typed (search.py), or "comunicacion" would not find "Comunicación". Text is folded
(no accents, lower case) and cut into letter/digit runs here in Python, for the index and
the query alike, so "dsc_00" finds DSC_0012.JPG; each typed word is a quoted prefix phrase,
so nothing typed is ever FTS syntax.

Facets: each item's FTS row also holds one token for its kind, its status, its camera, its
pick and its approval, and one per rating step it reaches ("at least 1" .. "at least 5"), in
a column of its own (facet_token). A search with free text and those filters is then
answered by the FTS alone, without reading a table row per match (search.py).
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata

# Free text is cut to this many words of this many characters: a pasted essay must not
# become an FTS query of thousands of terms.
MAX_WORDS = 16
MAX_WORD_CHARS = 64

_TOKEN = re.compile(r"[^\W_]+")


def fold(text: str) -> str:
    """Lower case without accents: "Comunicación" -> "comunicacion"."""
    if text.isascii():
        return text.lower()
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def tokens(text: str) -> list[str]:
    """Folded letter/digit runs; everything else (space, _ . - punctuation) separates."""
    return _TOKEN.findall(fold(text))


def fts_query(text: str) -> str | None:
    """An FTS5 query in which each typed word must match, as a prefix, or None for none.

    Each word becomes one quoted phrase of its tokens with the last one a prefix, so
    "dsc_00" is the phrase "dsc 00"* (finds DSC_0012.JPG) and nothing a user types is ever
    FTS syntax: quotes, stars, NEAR, AND, parentheses are separators or plain words.
    """
    phrases = []
    for word in text.split()[:MAX_WORDS]:
        parts = tokens(word[:MAX_WORD_CHARS])
        if parts:
            phrase = " ".join(parts).replace('"', '""')
            phrases.append(f'"{phrase}"*')
    return " ".join(phrases) or None


def fts_match(typed: str, facets: list[str]) -> str:
    """The MATCH of a search: `typed` (an fts_query) in the body and title columns, and the
    facet tokens in the facets column."""
    match = f"{{body title}} : ({typed})"
    return f"{match} AND facets : ({' '.join(facets)})" if facets else match


@functools.lru_cache(maxsize=256)
def facet_token(name: str, value: str) -> str:
    """The FTS token of a filter value ("kind", "photo"): "zz" and a hash, one token
    whatever the value's characters, never compared with a typed word (those are searched
    in body and title only)."""
    digest = hashlib.blake2b(f"{name}\x00{value}".encode("utf-8", "surrogatepass"),
                             digest_size=8).hexdigest()
    return f"zz{digest}"


def item_facets(kind: str, problems: int, camera: str | None, pick: str = "none",
                rating: int = 0, approved: bool = False) -> str:
    """The facets column of an item: its kind, status, camera, pick ("picked", "rejected",
    "none") and approval as facet tokens, and one "rating at least k" token for each k from
    1 to its rating (so that a minimum rating is one token too: rating_facet)."""
    parts = [facet_token("kind", kind),
             facet_token("status", "problems" if problems else "ok"),
             facet_token("pick", pick), facet_token("approved", "yes" if approved else "no")]
    if camera:
        parts.append(facet_token("camera", camera))
    parts += [rating_facet(k) for k in range(1, rating + 1)]
    return " ".join(parts)


def rating_facet(minimum: int) -> str:
    """The facet token of the items rated `minimum` or more (1-5)."""
    return facet_token("rating", str(minimum))
