"""The read-side query index: the catalog shards copied into SQLite for the web UI.

Why: the catalog is one TinyDB shard per archive folder (design decision 3), which is right
for writing and for repair but cannot answer "newest imports first" or a text search over
100,000 items within a web request, and holding every record in memory costs too much. So
the web process keeps `state/query.sqlite`: one row per item with the columns the filters and
orders need (indexed; people's pick, rating and approval among them), the whole record as
JSON text in a table apart (returned as stored), an FTS5 table for free text, and small
per-folder summaries for the archive pages.

It is a cache, never a truth. The shards stay the only thing ingest writes and nothing but
this package writes `query.sqlite`; deleting it, finding it damaged or of another schema
means it is rebuilt from the shards, never an error to the user.

Reading order:
- index.py: ItemIndex, what callers use: reads from many threads, refreshes, rebuilds.
- search.py: ItemQuery, and the SQL that answers a search quickly at 100,000 items.
- text.py: folding and tokenising free text, and the FTS5 queries built from it.
- schema.py: the tables and indexes, the schema version, opening the file or making it anew.
- refresh.py: which shards and agenda changes to read, following this process's own writes
  from the records written (no re-read), and the locks around writing.
- rows.py: what one shard's records become in the tables, and an edit's items rewritten.
"""

from appliance.query.index import ItemIndex
from appliance.query.schema import SCHEMA_VERSION
from appliance.query.search import KINDS, MAX_LIMIT, ORDERS, PICKS, STATUSES, ItemQuery
from appliance.query.text import fts_query

__all__ = ["KINDS", "MAX_LIMIT", "ORDERS", "PICKS", "SCHEMA_VERSION", "STATUSES",
           "ItemIndex", "ItemQuery", "fts_query"]
