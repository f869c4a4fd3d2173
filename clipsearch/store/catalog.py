"""The catalogue: one clipsearch database, and where each statement on its tables lives.

`Catalog` opens the connection (embedded or server), brings the schema up to date (schema.py) and holds
one part per concern, each the one home of its statements:

    catalog.images    ImageTable (images.py): `images`' columns, rows and files; `load_errors`
    catalog.files     FileTable (files.py): every path read, the content it held and its metadata (`files`)
    catalog.models    ModelRegistry (registry.py): the `models` table and the model of the stored vectors
    catalog.switch    ModelSwitch (switch.py): another model's vectors (`embeddings`) and the switch to them
    catalog.indexes   Indexes (indexes.py): the vector index, its tuning, the filter columns
    catalog.state     StateCache (state.py): the table state a search reads, cached until a write
    catalog.labels    LabelSets (labels.py): the `labels` table

Modules outside the store write only through these parts' methods. A feature's own reads (the search
statement, the pairs of duplicates and copies) stay beside the logic they serve and run through
`Catalog.query` / `Catalog.text`, which run one row-returning statement and refuse anything else, so they
cannot change a table. `Catalog.owner_sql` runs the owner's own SQL as typed (`clipsearch sql`), writes
included; clipsearch's modules never call it.
"""
from __future__ import annotations

import os
import re
from typing import Any

from clipsearch.errors import QueryError, StoreError, StoreUnavailable
from clipsearch.settings import Settings
from clipsearch.store import schema
from clipsearch.store.connection import ROWS_STATEMENT, Backend, Connection, connect, quote_identifier
from clipsearch.store.files import FileTable
from clipsearch.store.images import ImageTable
from clipsearch.store.indexes import Indexes
from clipsearch.store.labels import LabelSets
from clipsearch.store.registry import ModelRegistry
from clipsearch.store.state import StateCache
from clipsearch.store.switch import ModelSwitch

# What may follow a ';' in one statement: comments, string literals and quoted names hide theirs.
_HIDDEN_OR_SEMICOLON = re.compile(r"--[^\n]*|/\*.*?\*/|'(?:[^'\\]|\\.)*'|`[^`]*`|\"[^\"]*\"|;", re.DOTALL)
_NOTHING_AFTER = re.compile(r"(\s|--[^\n]*|/\*.*?\*/|;)*", re.DOTALL)


# clipTextEmbedding(text) on a ClickHouse server: a SQL function over the executable UDF of sql/udf/
# (clip_text_embedding_function.xml), which the server's admin installs. The server checks a query's time
# limit between blocks only, and the script embeds a block row by row, so it is handed the query's start
# and max_execution_time and stops the query past them. The internal name begins with "clipsearch_", the
# prefix the analyst check refuses (its arguments could be made up). Server functions are global, not per
# database: every store defines the same one.
SERVER_EMBEDDING_FUNCTION = "clipsearch_text_embedding"
SERVER_TEXT_EMBEDDING = (f"(text) -> {SERVER_EMBEDDING_FUNCTION}(text, toString(toUnixTimestamp64Micro(now64(6))), "
                         "toString(getSetting('max_execution_time')))")
EMBEDDED_TEXT_EMBEDDING = "clipsearch_text_embedding_json"   # what a clipsearch engine's own one calls


def one_read(sql: str) -> str:
    """`sql` if it is one statement that returns rows (SELECT, WITH, SHOW, DESCRIBE, EXPLAIN, EXISTS,
    CHECK), which cannot change a table; a QueryError otherwise (a write, or a second statement)."""
    if not ROWS_STATEMENT.match(sql):
        raise QueryError("Catalog.query runs one SELECT; write through the catalogue's named methods")
    if ";" in sql:   # the embedded engine runs every statement of a text: only trailing ones may follow
        for found in _HIDDEN_OR_SEMICOLON.finditer(sql):
            if found.group() == ";" and _NOTHING_AFTER.fullmatch(sql, found.end()) is None:
                raise QueryError("Catalog.query runs one statement")
    return sql


class Catalog:
    """The tables of one clipsearch database, on `connection` (created if missing); see the module's text."""

    def __init__(self, connection: Connection):
        # The engine's session: its write counter, read-only sessions, the service it goes through. Statements
        # on the tables go through the parts below.
        self.connection = connection
        self.backend: Backend = connection.backend
        schema.ensure(connection)   # one query when the database is current
        if self.backend == Backend.SERVER:
            self.define_server_text_embedding()
        self.images = ImageTable(connection)
        self.files = FileTable(connection)
        self.indexes = Indexes(connection, self.images.columns)
        self.models = ModelRegistry(connection, self.images)
        self.switch = ModelSwitch(connection, self.images, self.indexes)
        self.state = StateCache(connection)
        self.labels = LabelSets(connection)

    def define_server_text_embedding(self) -> None:
        """clipTextEmbedding(text) on a server (SERVER_TEXT_EMBEDDING), unless it is defined so already (one
        read; no write, so a user without the CREATE FUNCTION privilege opens a store the admin set up). It
        is left alone where it cannot be created (no privilege; an older config's executable function of
        that name) and where it is a clipsearch engine's own (a `serve` port given as the server): the store
        opens either way, and a call meets the server's own error (an unknown function)."""
        statement = f"CREATE FUNCTION clipTextEmbedding AS {SERVER_TEXT_EMBEDDING}"
        try:
            row = self.connection.query(
                "SELECT (SELECT any(create_query) FROM system.functions WHERE name = 'clipTextEmbedding') AS current, "
                "formatQuery({q:String}) AS ours", {"q": statement})[0]
            current, ours = row["current"], row["ours"]
            if current == ours or EMBEDDED_TEXT_EMBEDDING in current:
                return
            self.define_function("clipTextEmbedding", SERVER_TEXT_EMBEDDING)
        except StoreUnavailable:
            raise
        except StoreError:   # the store is fine; clipTextEmbedding is not there
            pass

    @classmethod
    def open(cls, settings: Settings | str | os.PathLike, create: bool = True) -> Catalog:
        """The catalogue the settings name (or of the embedded folder at a path); closes the connection
        again if the schema cannot be created. With `create` false an embedded folder must hold one."""
        if not isinstance(settings, Settings):
            settings = Settings(db=os.fspath(settings))
        connection = connect(settings, create)
        try:
            return cls(connection)
        except BaseException:
            connection.close()
            raise

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- reads, and the owner's SQL ----------------------------------------------------------------
    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        """The rows of one reading statement (one_read), as dicts; it may run beside other threads' reads
        (Connection.read), so it needs nothing of a session."""
        return self.connection.read(one_read(sql), params)

    def text(self, sql: str, params: dict | None = None, fmt: str = "PrettyCompact") -> str:
        """The output of one reading statement (one_read) in a ClickHouse format."""
        return self.connection.text(one_read(sql), params, fmt)

    def owner_sql(self, sql: str, params: dict | None = None, fmt: str | None = None) -> Any:
        """The owner's own SQL as typed (`clipsearch sql`, Collection.sql; scripts such as
        sql/rebuild_images.sql), any statement: rows as dicts, or with `fmt` the output in that format, as
        bytes (binary formats such as Parquet are written out as they are)."""
        return self.connection.query(sql, params) if fmt is None else self.connection.raw(sql, params, fmt)

    # -- the few statements on tables of their own ---------------------------------------------------
    def append_search_log(self, rows: Any) -> None:
        """Insert a pyarrow Table of search_log rows (clipsearch.search.log). Not counted as a write: a
        search's log row changes nothing a search reads."""
        self.connection.insert("search_log", rows, counted=False)

    def append_click(self, search_id: str, image_id: str, rank: int) -> None:
        """A search_clicks row (clipsearch.search.log); not counted as a write, as search_log's are not."""
        import pyarrow as pa
        self.connection.insert("search_clicks", pa.table({
            "search_id": pa.array([search_id], pa.string()), "image_id": pa.array([image_id], pa.string()),
            "rank": pa.array([rank], pa.uint32())}), counted=False)

    def append_judgments(self, rows: Any) -> None:
        """Insert a pyarrow Table of judgments rows (clipsearch eval --save); nothing a search reads."""
        self.connection.insert("judgments", rows, counted=False)

    def define_function(self, name: str, definition: str) -> None:
        """CREATE OR REPLACE FUNCTION `name` AS `definition` (a lambda: clipTextEmbedding, on either
        engine)."""
        self.connection.command(f"CREATE OR REPLACE FUNCTION {quote_identifier(name)} AS {definition}")
