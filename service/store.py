"""ClickHouse store: embedded chdb by default, a ClickHouse server when CLICKHOUSE_URL is set.

Both backends run the same SQL text with `{name:Type}` placeholders and bind
the values separately, so no value from a user is ever formatted into SQL.
Results come back as JSONEachRow on both, so they parse the same way.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import threading
from pathlib import Path

SCHEMA_FILE = Path(__file__).resolve().parent.parent / "sql" / "schema.sql"
DEFAULT_DB = "./clipsearch-data"
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
VECTOR_QUANTIZATIONS = ("bf16", "f32", "f16", "i8", "b1")
VECTOR_INDEXES = ("FROM system.data_skipping_indices WHERE database = currentDatabase() "
                  "AND table = 'images' AND type = 'vector_similarity'")


def sql_statements(script: str) -> list[str]:
    """Split a SQL file on ';' after dropping whole-line comments."""
    body = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


class StoreError(Exception):
    """A query or connection failed; the message is fit to show a user."""


def _clean_message(exc: Exception) -> str:
    """ClickHouse's own message, without stack traces or the HTTP client's wrapping."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^Received ClickHouse exception, code: \d+, server response: ", "", text)
    text = re.sub(r"\s*\(for url [^)]*\)$", "", text)
    return re.sub(r"\s*Stack trace.*$", "", text)


class ModelMismatch(StoreError):
    """The table's vectors come from another model than the configured one."""


def quote_identifier(name: str) -> str:
    if not IDENTIFIER.match(name):
        raise StoreError(f"invalid column name {name!r}: use letters, digits and _")
    return f"`{name}`"


class Store:
    """What the rest of clipsearch needs from ClickHouse; subclasses bind a backend."""

    backend = "?"

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        """Run a SELECT and return its rows as dicts."""
        text = self.text(sql, params, "JSONEachRow")
        return [json.loads(line) for line in text.splitlines() if line]

    def text(self, sql: str, params: dict | None = None, fmt: str = "PrettyCompact") -> str:
        """Run any statement and return its output in a ClickHouse format."""
        raise NotImplementedError

    def command(self, sql: str, params: dict | None = None) -> None:
        self.text(sql, params, "TabSeparated")

    def insert(self, table: str, rows) -> None:
        """Insert a pyarrow Table whose column names match the table's."""
        raise NotImplementedError

    def close(self) -> None:
        pass

    # -- schema -----------------------------------------------------------------------------
    def ensure_schema(self) -> None:
        """Create the tables of sql/schema.sql that do not exist yet (each backend does this on open)."""
        for statement in sql_statements(SCHEMA_FILE.read_text()):
            self.command(statement)

    def columns(self, table: str = "images") -> dict[str, str]:
        """Column name -> ClickHouse type, in table order; empty if the table does not exist."""
        rows = self.query("SELECT name, type FROM system.columns WHERE database = currentDatabase() "
                          "AND table = {table:String} ORDER BY position", {"table": table})
        return {r["name"]: r["type"] for r in rows}

    def add_columns(self, new_columns: dict[str, str], table: str = "images") -> None:
        for name, ch_type in new_columns.items():
            self.command(f"ALTER TABLE {quote_identifier(table)} ADD COLUMN IF NOT EXISTS "
                         f"{quote_identifier(name)} {ch_type}")

    def existing_ids(self, ids: list[str]) -> set[str]:
        if not ids:
            return set()
        rows = self.query("SELECT id FROM images WHERE id IN {ids:Array(String)}", {"ids": list(ids)})
        return {r["id"] for r in rows}

    def check_model(self, label: str, stored: list[str] | None = None) -> None:
        """Refuse to mix or compare vectors from different models: they live in different spaces."""
        if stored is None:
            stored = [r["model"] for r in self.query("SELECT DISTINCT model FROM images LIMIT 3")]
        if stored and stored != [label]:
            raise ModelMismatch(f"the table holds embeddings from {', '.join(stored)}, but the model in use is "
                                f"{label}; use the same --model/--pretrained as the load, or another --db")

    def search_state(self) -> dict:
        """What a search needs to know of `images`, in one round trip: columns, models, rows, vector index."""
        row = self.query(
            "SELECT (SELECT groupArray((position, name, type)) FROM system.columns "
            "        WHERE database = currentDatabase() AND table = 'images') AS columns, "
            "       (SELECT groupUniqArray(3)(model) FROM images) AS models, "
            "       (SELECT count() FROM images) AS rows, "
            f"       (SELECT count() {VECTOR_INDEXES}) AS vector_indexes")[0]
        return {"columns": {name: ch_type for _, name, ch_type in sorted(row["columns"])},
                "models": sorted(row["models"]), "rows": int(row["rows"]), "vector_index": row["vector_indexes"] > 0}

    def vector_index(self) -> dict | None:
        """The HNSW index on images.embedding, if there is one: {name, type_full}."""
        rows = self.query(f"SELECT name, type_full {VECTOR_INDEXES}")
        return rows[0] if rows else None

    def create_vector_index(self, quantization: str = "bf16", m: int = 16, ef_construction: int = 128) -> None:
        """Add ClickHouse's vector_similarity (HNSW) index on images.embedding and build it for stored rows.

        Building costs minutes per few hundred thousand rows on small machines; new
        parts get their index as they are inserted and merged.
        """
        if quantization not in VECTOR_QUANTIZATIONS:
            raise StoreError(f"quantization must be one of {', '.join(VECTOR_QUANTIZATIONS)}")
        dims = self.query("SELECT DISTINCT length(embedding) AS d FROM images LIMIT 2")
        if len(dims) != 1:
            raise StoreError("the index needs a table whose vectors all have one length; load images first")
        hnsw = f"'hnsw', 'cosineDistance', {int(dims[0]['d'])}, '{quantization}', {int(m)}, {int(ef_construction)}"
        self.command("ALTER TABLE images ADD INDEX IF NOT EXISTS embedding_hnsw embedding "
                     f"TYPE vector_similarity({hnsw}) GRANULARITY 100000000")
        self.command("ALTER TABLE images MATERIALIZE INDEX embedding_hnsw SETTINGS mutations_sync = 2")

    def add_rerank_column(self) -> None:
        """Add the reduced-precision copy of the vectors that the "rerank" search strategy scans:
        a QBit column (bit-sliced, so a scan can read only the leading bits of each number),
        MATERIALIZED from `embedding`, so every insert fills it and `SELECT *` leaves it out."""
        from .query import RERANK_COLUMN
        dims = self.query("SELECT DISTINCT length(embedding) AS d FROM images LIMIT 2")
        if len(dims) != 1:
            raise StoreError("the reduced-precision copy needs vectors of one length; load images first")
        self.command(f"ALTER TABLE images ADD COLUMN IF NOT EXISTS {RERANK_COLUMN} "
                     f"QBit(Float32, {int(dims[0]['d'])}) MATERIALIZED embedding "
                     "SETTINGS allow_experimental_qbit_type = 1")
        self.command(f"ALTER TABLE images MATERIALIZE COLUMN {RERANK_COLUMN} SETTINGS mutations_sync = 2")

    def drop_vector_index(self) -> None:
        index = self.vector_index()
        if index:
            self.command(f"ALTER TABLE images DROP INDEX {quote_identifier(index['name'])}")

    def count(self) -> int:
        return int(self.query("SELECT count() AS n FROM images")[0]["n"])

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


class EmbeddedStore(Store):
    """chdb with a persistent directory.

    chdb takes no lock on its directory, and two processes writing one
    directory corrupt it, so this store holds an exclusive file lock for its
    lifetime. Within the process one connection serves every thread, one
    statement at a time.
    """

    backend = "embedded"

    def __init__(self, path: str | os.PathLike):
        import chdb
        self.path = Path(path).resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        self._lock_file = open(self.path / ".clipsearch.lock", "a+")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise StoreError(f"database {self.path} is in use by process {holder}; stop it, use another "
                             f"--db, or run a ClickHouse server (CLICKHOUSE_URL) for concurrent access")
        self._lock_file.truncate(0)
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()
        self._mutex = threading.Lock()
        try:
            self._conn = chdb.connect(str(self.path))
        except Exception as exc:
            self._release()
            raise StoreError(f"cannot open database {self.path}: {_clean_message(exc)}") from exc
        self.ensure_schema()

    def text(self, sql, params=None, fmt="PrettyCompact"):
        bound = {name: _param_text(value) for name, value in (params or {}).items()}
        with self._mutex:
            try:
                result = self._conn.query(sql, fmt, params=bound)
            except Exception as exc:
                raise StoreError(_clean_message(exc)) from exc
        return result.bytes().decode() if result is not None else ""

    def insert(self, table, rows):
        # chdb's Python() table function reads the Arrow table by its variable name.
        arrow_rows = rows  # noqa: F841
        cols = ", ".join(quote_identifier(c) for c in rows.column_names)
        with self._mutex:
            try:
                self._conn.query(f"INSERT INTO {quote_identifier(table)} ({cols}) SELECT * FROM Python(arrow_rows)")
            except Exception as exc:
                raise StoreError(_clean_message(exc)) from exc

    def _release(self):
        if self._lock_file and not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def close(self):
        conn, self._conn = getattr(self, "_conn", None), None
        if conn is not None:
            with self._mutex:
                conn.close()
        self._release()


class ServerStore(Store):
    """A ClickHouse server through clickhouse-connect (HTTP), server-side parameter binding."""

    backend = "server"

    def __init__(self, url: str):
        import clickhouse_connect
        self.url = url
        try:
            # No session: each request stands alone, so threads can share the client.
            self._client = clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False)
        except Exception as exc:
            raise StoreError(f"cannot connect to ClickHouse at {_redact(url)}: {_clean_message(exc)}") from exc
        self.ensure_schema()

    def text(self, sql, params=None, fmt="PrettyCompact"):
        try:
            raw = self._client.raw_query(sql, parameters=params or None, fmt=fmt,
                                         settings={"output_format_json_quote_64bit_integers": 0})
        except Exception as exc:
            raise StoreError(_clean_message(exc)) from exc
        return raw.decode()

    def insert(self, table, rows):
        try:
            self._client.insert_arrow(table, rows)
        except Exception as exc:
            raise StoreError(_clean_message(exc)) from exc

    def close(self):
        self._client.close()


def _param_text(value) -> str:
    """A parameter value as the text ClickHouse parses for `{name:Type}`.

    chdb hands parameter values to ClickHouse as text and does not quote the
    strings inside arrays, so arrays are written here as quoted literals.
    """
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(_param_literal(v) for v in value) + "]"
    if isinstance(value, str):  # parsed in ClickHouse's escaped text format
        return value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")
    return repr(value) if isinstance(value, float) else str(value)


def _param_literal(value) -> str:
    if isinstance(value, str):
        return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"
    if isinstance(value, (list, tuple)):
        return _param_text(value)
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _redact(url: str) -> str:
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", url)


def open_store(db: str | os.PathLike | None = None, url: str | None = None) -> Store:
    """The configured store: a server if a URL is given or CLICKHOUSE_URL is set, else embedded."""
    url = url or os.environ.get("CLICKHOUSE_URL")
    if url:
        return ServerStore(url)
    return EmbeddedStore(db or os.environ.get("CLIPSEARCH_DB") or DEFAULT_DB)
