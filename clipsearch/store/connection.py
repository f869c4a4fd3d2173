"""Connections to ClickHouse: the embedded engine (chdb) in a folder, or a server over HTTP.

Both are clickhouse-connect clients (`chdb://FOLDER` or `http(s)://...`), so both
run the same SQL text with `{name:Type}` placeholders and bind values on the
engine's side: no value from a user is ever formatted into SQL. Results come
back as JSONEachRow on both and parse the same way.
"""
from __future__ import annotations

import errno
import fcntl
import json
import os
import queue
import re
import stat
import sys
import threading
from collections.abc import Iterator
from enum import Enum
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlencode
from xml.sax.saxutils import escape

from clipsearch.errors import StoreError, StoreUnavailable
from clipsearch.settings import Settings

# Analysts' plain SQL (WHERE filter + ORDER BY cosineDistance(...) LIMIT k) must return k rows when k rows
# match, also once the HNSW index exists; ClickHouse's default post-filters the index's few neighbours and
# can return none. Prefilter ranks the matching rows. The service's own queries set theirs per query.
ANALYST_DEFAULTS = {"vector_search_filter_strategy": "prefilter"}
# Engine sessions an embedded store's searches read on (Connection.read), its own included: one session runs
# one statement at a time, and the store's own also takes the writes (the search log): one per core beside it
# (2 cores: 3; bench/README.md, throughput)
READ_SESSIONS = min(5, (os.cpu_count() or 2) + 1)
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
SETTING_VALUE = re.compile(r"^[A-Za-z0-9_.:+\-/ ]{0,100}$")   # a setting's text value: nothing that ends a literal
# Statements that return rows in an output format; anything else (INSERT ... VALUES, DDL) runs as a
# command, because a format clause appended to it would be parsed as its data or refused.
ROWS_STATEMENT = re.compile(r"^(\s|--[^\n]*\n|/\*.*?\*/|\()*(SELECT|WITH|SHOW|DESC|DESCRIBE|EXPLAIN|EXISTS|CHECK)\b",
                            re.IGNORECASE | re.DOTALL)


def quote_identifier(name: str) -> str:
    """`name` quoted for SQL; refuses anything but letters, digits and _ (never a user's free text)."""
    if not IDENTIFIER.match(name):
        raise StoreError(f"invalid column name {name!r}: use letters, digits and _")
    return f"`{name}`"


def sql_statements(script: str) -> list[str]:
    """Split a SQL file on ';' after dropping whole-line comments."""
    body = "\n".join(line for line in script.splitlines() if not line.lstrip().startswith("--"))
    return [s.strip() for s in body.split(";") if s.strip()]


def clean_message(exc: BaseException) -> str:
    """ClickHouse's own message, without stack traces or the HTTP client's wrapping."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    text = re.sub(r"^Received ClickHouse exception, code: \d+, server response: ", "", text)
    text = re.sub(r"\s*\(for url [^)]*\)$", "", text)
    return re.sub(r"\s*Stack trace.*$", "", text)


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    return re.sub(r"//([^:@/]+):[^@/]*@", r"//\1:***@", url)


# -- a store that cannot be reached --------------------------------------------------------------------
# The one place that tells a store gone away (its folder moved or its disk unplugged, read-only, full, its
# permissions taken away; a server down) from a statement's own mistake. Measured on chdb: a moved folder or
# an unplugged disk gives FILE_DOESNT_EXIST (107) on the next read of a part; permissions taken away,
# CANNOT_OPEN_FILE (76), CANNOT_STATVFS (214) or a std::filesystem error (STD_EXCEPTION, 1001) on a write;
# a read-only disk, STD_EXCEPTION; a full disk, NOT_ENOUGH_SPACE (243). Each names a file in the store's
# folder, except the disk's own two. The engine recovers in-process when the same folder is back.
FILE_ERRORS = {74, 75, 76, 77, 83, 87, 88, 107, 172, 204, 294, 424, 425, 458, 521, 586, 641, 1000, 1001}
DISK_ERRORS = {214, 243}   # CANNOT_STATVFS, NOT_ENOUGH_SPACE: about the store's disk whatever they name
SERVER_MARKERS = ("/store/", "/metadata/")   # a server's files, where its message names one
UNAVAILABLE = "the store is unavailable"
BACK = "requests work again once it is back"
GONE = f"{UNAVAILABLE}: its folder is not where it was opened (moved, renamed or its disk unplugged); {BACK}"
REPLACED = (f"{UNAVAILABLE}: another folder now stands where the store was opened; restart the service "
            "(or command) to open it")
SERVER_DOWN = f"{UNAVAILABLE}: the ClickHouse server does not answer; {BACK}"
REASONS = (   # what an OS error's text or number says of the store's disk, most telling first
    (("Read-only file system", "errno: 30"), "its disk is read-only"),
    (("No space left", "not enough space", "errno: 28"), "its disk is full"),
    (("Permission denied", "Operation not permitted", "errno: 13", "errno: 1,"),
     "its folder's permissions no longer let this process read or write it"),
    (("No such file", "errno: 2,"), "some of its files are missing"),
)
ERRNO_TEXT = {errno.EROFS: "Read-only file system", errno.ENOSPC: "No space left", errno.EDQUOT: "No space left",
              errno.EACCES: "Permission denied", errno.EPERM: "Permission denied", errno.ENOENT: "No such file"}


def _reason(text: str) -> str:
    for markers, reason in REASONS:
        if any(marker in text for marker in markers):
            return f"{UNAVAILABLE}: {reason}; {BACK}"
    return f"{UNAVAILABLE}: its files cannot be read or written; {BACK}"


def unavailable(exc: BaseException, folder: str | None = None) -> StoreUnavailable | None:
    """The StoreUnavailable that the engine's error `exc` means, or None when the statement itself failed.
    `folder`: the embedded store's folder, which a file error about the store names; None for a server (its
    messages name files under its store/ or metadata/). The message names no path."""
    text = str(exc)
    if type(exc).__name__ == "OperationalError":   # clickhouse-connect: no answer, or a 503 after its retries
        said = re.search(r"server response: (?:Code: \d+\. DB::Exception: )?(.*)", text.strip().split("\n")[0])
        if said is None:
            return StoreUnavailable(SERVER_DOWN)
        # less the trailers: (ERROR_NAME), (version ...), (for url ...)
        words = re.sub(r"(\s*\((?:[A-Z_]+|version (?:[^()]|\([^()]*\))*|for url [^)]*)\))+$", "", said.group(1))
        words = words.rstrip(". ")
        return StoreUnavailable(words if words.startswith(UNAVAILABLE)   # a served folder's port said it
                                else f"{UNAVAILABLE}: the ClickHouse server answers: {words}")
    code = re.search(r"Code: (\d+)", text)
    number = int(code.group(1)) if code else None
    if number in DISK_ERRORS:
        return StoreUnavailable(_reason(text))
    if number in FILE_ERRORS:
        markers = (folder.rstrip("/") + "/",) if folder else SERVER_MARKERS
        if any(marker in text for marker in markers):
            return StoreUnavailable(_reason(text))
    return None


def unavailable_os(exc: OSError, *folders: str | os.PathLike) -> StoreUnavailable | None:
    """StoreUnavailable for an OSError on a file in one of the store's `folders` (its thumbnails', say), or
    None for one elsewhere."""
    name = os.fspath(exc.filename) if isinstance(exc.filename, (str, os.PathLike)) else ""
    if not name or not any(os.path.abspath(name).startswith(os.path.abspath(f) + os.sep) for f in folders):
        return None
    return StoreUnavailable(_reason(ERRNO_TEXT.get(exc.errno or 0, "")))


class StoreFolder:
    """The embedded store's folder as it was opened, held by this process's lock on its lock file.

    chdb keeps its tables' metadata in memory and opens part files by path, so a folder moved away (or its
    disk unplugged) still answers what memory holds, and a write then makes the folder anew at the old path,
    which splits the store and blocks moving it back. `check` runs before every statement: the lock file at
    the path must be the one this process holds (same device and inode), else StoreUnavailable. When the same
    folder (the same disk) is back, statements run again; another folder there needs a restart."""

    def __init__(self, path: Path, lock_file: Any):
        self.path, self._lock_file = path, lock_file

    def check(self) -> None:
        try:
            here = os.stat(self.path / LOCK_FILE)
        except FileNotFoundError:
            raise StoreUnavailable(REPLACED if self.path.is_dir() and (self.path / "metadata").is_dir()
                                   else GONE) from None
        except OSError as exc:   # a folder whose permissions were taken away, or an I/O error
            raise StoreUnavailable(_reason(ERRNO_TEXT.get(exc.errno or 0, ""))) from None
        held = os.fstat(self._lock_file.fileno())
        if (here.st_dev, here.st_ino) != (held.st_dev, held.st_ino):
            raise StoreUnavailable(REPLACED)


def engine_error(exc: BaseException, folder: StoreFolder | None = None) -> StoreError:
    """The clipsearch error for an engine's error: StoreUnavailable when the store is at fault (the folder's
    own check first: it says best why), else StoreError with ClickHouse's message, the folder's path in it
    shortened to <store>."""
    if folder is not None:
        try:
            folder.check()
        except StoreUnavailable as gone:
            return gone
    found = unavailable(exc, str(folder.path) if folder else None)
    if found is not None:
        return found
    message = clean_message(exc)
    return StoreError(message.replace(str(folder.path), "<store>") if folder else message)


def json_rows(text: str) -> list[dict]:
    """JSONEachRow's rows: one per "\n" only (str.splitlines would also split inside a value holding U+2028,
    U+0085 or U+001C..U+001E, which ClickHouse writes unescaped)."""
    return [json.loads(line) for line in text.split("\n") if line]


class Backend(str, Enum):
    """Where a connection's ClickHouse is (a str: compares and prints as its value)."""
    EMBEDDED = "embedded"   # chdb in this process, on a folder
    SERVER = "server"       # a ClickHouse server (CLICKHOUSE_URL)
    SERVED = "served"       # an embedded folder, through the `clipsearch serve` that holds it

    def __str__(self) -> str:
        return self.value


class WriteCounter:
    """How many statements that may change data or schema have run on a connection (and, for a served
    folder, on its ClickHouse HTTP port, which shares the service's counter): caches of what is stored
    compare it to know they are still current."""

    def __init__(self) -> None:
        self.count = 0

    def note(self) -> None:
        self.count += 1   # a lost increment under a race still changes the value a cache saw


class Connection:
    """One ClickHouse: run statements, insert Arrow tables. Thread-safe (the client serialises calls)."""

    backend = Backend.SERVER
    service: dict | None = None   # for a served folder: what its `serve` says of itself (service_info)
    # A server quotes 64-bit integers in JSON by default; chdb does not. Ask both for plain numbers.
    _json_settings: dict[str, Any] = {"output_format_json_quote_64bit_integers": 0}

    def __init__(self, client: Any, where: str, dsn: str = "", backend: Backend | None = None,
                 folder: StoreFolder | None = None):
        self._client = client
        self.backend = backend or type(self).backend
        self.where = where
        self._dsn = dsn
        self.writes = WriteCounter()
        self.folder = folder   # an embedded store's, checked before each statement

    def check_folder(self) -> None:
        """StoreUnavailable unless the embedded store's folder is the one this process holds (nothing for a server)."""
        if self.folder is not None:
            self.folder.check()

    def _failed(self, exc: BaseException, client: Any = None) -> StoreError:
        """The error to raise for a failed statement (StoreUnavailable when the store, not the statement, is
        at fault), after clearing what chdb leaves behind: after a query fails mid-result (e.g. over
        max_result_rows), chdb hands its partial output to the session's next query as that query's result.
        One throwaway query on the same session takes it."""
        if self._dsn.startswith("chdb:"):
            try:
                (client or self._client).raw_query("SELECT 1")
            except Exception:   # the original error is the one to report
                pass
        return engine_error(exc, self.folder)

    def _rows_raw(self, client: Any, sql: str, params: dict | None, fmt: str) -> bytes:
        settings = self._json_settings if fmt.startswith("JSON") else None
        self.check_folder()
        try:
            return bytes(client.raw_query(sql, parameters=bindable(params), fmt=fmt, settings=settings))
        except Exception as exc:
            raise self._failed(exc, client) from exc

    def raw(self, sql: str, params: dict | None = None, fmt: str = "PrettyCompact") -> bytes:
        """Run any statement and return its output in a ClickHouse format as the engine wrote it, byte for byte
        (Parquet, Arrow and Native are binary; b"" for a command)."""
        if not ROWS_STATEMENT.match(sql):
            self.command(sql, params)
            return b""
        return self._rows_raw(self._client, sql, params, fmt)

    def text(self, sql: str, params: dict | None = None, fmt: str = "PrettyCompact") -> str:
        """`raw` for a text format, as text."""
        return self.raw(sql, params, fmt).decode("utf-8", "replace")

    def query(self, sql: str, params: dict | None = None) -> list[dict]:
        """Run a SELECT and return its rows as dicts."""
        return json_rows(self.text(sql, params, "JSONEachRow"))

    def read(self, sql: str, params: dict | None = None) -> list[dict]:
        """The rows of a reading statement (rows_statement) that needs nothing of this session but its
        defaults: a search's. Runs beside other threads' reads (a server takes each request on its own)."""
        return self.query(sql, params)

    def command(self, sql: str, params: dict | None = None) -> None:
        """Run a statement that returns nothing (DDL, INSERT ... SELECT, DELETE)."""
        self.writes.note()
        self.check_folder()
        try:
            self._client.command(sql, parameters=bindable(params))
        except Exception as exc:
            raise self._failed(exc) from exc
        finally:   # again once done: a search that began while it ran may not have seen it, and keeps nothing
            self.writes.note()

    def insert(self, table: str, rows: Any, counted: bool = True) -> None:
        """Insert a pyarrow Table whose column names match the table's (`counted`: in `writes`; the search
        log's own rows change nothing a search reads)."""
        if counted:
            self.writes.note()
        self.check_folder()
        try:
            self._client.insert_arrow(table, rows)
        except Exception as exc:
            raise self._failed(exc) from exc
        finally:
            if counted:   # again once done, as command
                self.writes.note()

    def stream(self, sql: str, params: dict | None = None, fmt: str = "JSONCompactEachRowWithNamesAndTypes"
               ) -> Iterator[bytes]:
        """A query's output in `fmt` as it arrives, never held whole."""
        self.check_folder()
        try:
            source = self._client.raw_stream(sql, parameters=bindable(params), fmt=fmt,
                                             settings=self._json_settings if fmt.startswith("JSON") else None)
            with source:
                yield from source
        except Exception as exc:
            raise self._failed(exc) from exc

    def close(self) -> None:
        self._client.close()

    def read_only(self, settings: dict[str, Any]) -> Connection:
        """Another session on the same data with `settings` (an analyst's limits: clipsearch.analyst.policy),
        that refuses writes, setting changes and the table functions that read files or the network
        (`readonly = 1`, set after them, which the session itself cannot undo)."""
        import clickhouse_connect
        try:
            client = clickhouse_connect.get_client(dsn=self._dsn, autogenerate_session_id=False,
                                                   settings=_read_only(settings))
        except Exception as exc:
            raise StoreUnavailable(f"cannot open a read-only session: {clean_message(exc)}") from exc
        return Connection(client, self.where, self._dsn, self.backend)

    def check_reads(self) -> None:
        """Raise StoreUnavailable (or StoreError) unless the store answers a read of its images' data, not
        only of what the engine holds in memory (a count): /healthz."""
        self.query("SELECT id FROM images LIMIT 1")


class EmbeddedConnection(Connection):
    """chdb with a persistent folder.

    chdb takes no lock on its folder, and two processes writing one folder
    corrupt it, so this connection holds an exclusive file lock for its
    lifetime. Within the process the client serves every thread, one
    statement at a time.
    """

    backend = Backend.EMBEDDED
    _json_settings: dict[str, Any] = {}   # chdb's default already; setting it costs a round trip

    def __init__(self, path: str | os.PathLike, create: bool = True, read_sessions: int = READ_SESSIONS):
        self.path = Path(path).expanduser().resolve()
        self.read_sessions = read_sessions
        if not create and not (self.path / "metadata").is_dir():
            raise StoreUnavailable(f"no clipsearch database at {self.path}; load something first "
                                   "(clipsearch load FOLDER) or pass --db")
        keep_files_private()
        try:
            private_folder(self.path, STORE_ENTRIES)
            # not through a link: a folder made by someone else could point it at a file of this user's
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC,
                         0o600)
            self._lock_file = os.fdopen(fd, "a+")
            mark_store_folder(self.path)   # never loaded as photos
        except OSError as exc:
            raise StoreUnavailable(f"cannot use {self.path} as a database folder: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.seek(0)
            holder = self._lock_file.read().strip() or "another process"
            self._lock_file.close()
            raise StoreUnavailable(f"database {self.path} is in use by process {holder}; stop it, use another "
                                   f"--db, or run a ClickHouse server (CLICKHOUSE_URL) for concurrent access") from None
        self._lock_file.truncate(0)
        self._lock_file.write(str(os.getpid()))
        self._lock_file.flush()
        try:
            client = _store_session(self.path)
        except Exception as exc:
            self._release()
            raise StoreUnavailable(f"cannot open database {self.path}: {clean_message(exc)}") from exc
        super().__init__(client, str(self.path), f"chdb://{self.path}", folder=StoreFolder(self.path, self._lock_file))
        # idle sessions for reads: the store's own first, so one thread at a time never opens another (each
        # chdb session keeps a dozen files open in this process after it closes)
        self._readers: queue.SimpleQueue = queue.SimpleQueue()
        self._readers.put(self._client)
        self._reader_count = 1
        self._readers_lock = threading.Lock()

    def read(self, sql: str, params: dict | None = None) -> list[dict]:
        """On one of `read_sessions` engine sessions (the store's own, and others opened when reads overlap):
        one session runs one statement at a time, so searches from several threads would otherwise wait for
        each other while the engine has cores to spare."""
        if not ROWS_STATEMENT.match(sql):
            raise StoreError("read runs one reading statement")
        self.check_folder()   # before a session opens: opening one writes the engine's configuration there
        client = self._reader()
        try:
            text = self._rows_raw(client, sql, params, "JSONEachRow").decode("utf-8", "replace")
        finally:
            self._readers.put(client)
        return json_rows(text)

    def _reader(self) -> Any:
        try:
            return self._readers.get_nowait()
        except queue.Empty:
            pass
        with self._readers_lock:
            opening = self._reader_count < self.read_sessions
            self._reader_count += opening
        if not opening:
            return self._readers.get()   # all busy: the first one free
        try:
            client = _store_session(self.path)
        except Exception as exc:
            with self._readers_lock:
                self._reader_count -= 1
            raise engine_error(exc, self.folder) from exc
        return client

    def read_only(self, settings: dict[str, Any]) -> Connection:
        settings = _read_only(settings)
        try:
            client = _chdb_client(self.path)
            # SET lasts for this session alone (the service's own session stays writable); once readonly
            # is set, the session cannot change any setting again, limits included.
            for name, value in settings.items():
                client.command(set_statement(name, value))
        except Exception as exc:
            raise StoreUnavailable(f"cannot open a read-only session: {clean_message(exc)}") from exc
        return EmbeddedReadOnly(client, str(self.path), f"chdb://{self.path}", settings=settings, folder=self.folder)

    def _release(self) -> None:
        if not self._lock_file.closed:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()

    def close(self) -> None:
        try:
            while True:   # every session closes before the lock goes: an open one keeps the engine on the folder
                try:
                    reader = self._readers.get_nowait()
                except queue.Empty:
                    break
                if reader is not self._client:   # closed below
                    reader.close()
            super().close()
        finally:
            self._release()


ENGINE_CONFIG = ".clipsearch-engine.xml"


def uncompressed_cache_bytes() -> int:
    """The embedded engine's cache of decompressed column blocks (chdb's default: none). Searches ask for it
    (query.CACHED_READ): the few rows a search shows are read from it instead of decompressing a block of
    every column per row, and a table's vectors that fit in it are scanned without reading them again
    (200k x 128: 12 -> 8 ms a search, exact scans 22 -> 14 ms; bench/README.md). An eighth of the
    memory, at most 2 GiB; it fills only as searches read."""
    try:
        memory = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):   # not a POSIX system
        memory = 8 << 30
    return min(2 << 30, memory // 8)


def engine_uri(folder: str | os.PathLike) -> str:
    """chdb's connection string for the database in `folder`, with the product's own engine configuration.

    Without a config file the engine reads `config.xml` from the current directory, so a stray one in
    the folder a command runs from would change (or break) the product. The configuration names
    sql/engine/users.xml (the user's grants) by absolute path, as ClickHouse resolves a relative one
    against the current directory; it is written into the database folder, where it is found by the
    same path from every process. The first connection of a process starts its one engine, so every
    connection in clipsearch opens with this string."""
    from importlib.resources import files
    folder = Path(os.path.realpath(Path(folder).expanduser()))
    users = Path(str(files("clipsearch.sql").joinpath("engine", "users.xml"))).resolve()
    config = folder / ENGINE_CONFIG
    text = (f"<clickhouse>\n  <users_config>{escape(str(users))}</users_config>\n"
            f"  <uncompressed_cache_size>{uncompressed_cache_bytes()}</uncompressed_cache_size>\n</clickhouse>\n")
    try:
        current = config.read_text()
    except OSError:
        current = None
    if current != text:
        folder.mkdir(parents=True, exist_ok=True)
        partial = config.with_name(f"{ENGINE_CONFIG}.{os.getpid()}")
        partial.write_text(text)
        partial.replace(config)   # another process may read it at the same moment: never half written
    return f"{folder}?{urlencode({'config-file': str(config)})}"


def import_chdb() -> Any:
    """The chdb module. Importing it starts an engine in memory, which reads `config.xml` from the current
    folder: import it from this package's folder, which has none."""
    if "chdb" not in sys.modules:
        here = os.getcwd()
        os.chdir(Path(__file__).resolve().parent)
        try:
            import chdb  # noqa: F401
        finally:
            os.chdir(here)
    return sys.modules["chdb"]


def _chdb_client(folder: Path) -> Any:
    """A clickhouse-connect client on the embedded engine, opened with engine_uri's string."""
    import_chdb()
    import clickhouse_connect
    uri = engine_uri(folder)
    path, _, query = uri.partition("?")
    return clickhouse_connect.get_client(dsn=f"chdb://{path}", chdb_options=dict(parse_qsl(query)))


def _store_session(folder: Path) -> Any:
    """A session of the store's own kind: a chdb client with ANALYST_DEFAULTS set (SET lasts for the session)."""
    client = _chdb_client(folder)
    for name, value in ANALYST_DEFAULTS.items():
        client.command(f"SET {name} = '{value}'")
    return client


class EmbeddedReadOnly(Connection):
    """EmbeddedConnection.read_only's session. Its `stream` runs each query on an engine session of its own
    with the same settings: chdb streams block by block (clickhouse-connect's chdb client holds a result
    with a header whole), and one query's state never reaches another's."""

    backend = Backend.EMBEDDED
    _json_settings: dict[str, Any] = {}

    def __init__(self, client: Any, where: str, dsn: str, settings: dict[str, Any], folder: StoreFolder | None = None):
        super().__init__(client, where, dsn, folder=folder)
        self.settings = settings

    def stream(self, sql: str, params: dict | None = None, fmt: str = "JSONCompactEachRowWithNamesAndTypes"
               ) -> Iterator[bytes]:
        from clipsearch.store.results import STREAMING_FORMATS, one_header
        if fmt not in STREAMING_FORMATS:
            raise StoreError(f"{fmt} cannot be streamed")
        self.check_folder()
        try:
            conn = engine_session(engine_uri(self.where), self.settings)
        except Exception as exc:
            raise engine_error(exc, self.folder) from exc
        try:
            result = conn.send_query(sql, fmt, params=params or {})
            try:
                yield from one_header((block.bytes() for block in result), fmt)
            finally:
                result.close()
        except StoreError:
            raise
        except Exception as exc:
            raise engine_error(exc, self.folder) from exc
        finally:
            conn.close()


def set_statement(name: str, value: Any) -> str:
    """`SET name = value` for a setting whose name is an identifier and whose value is a number or plain text
    (SETTING_VALUE): nothing in it is quoted from a user's text."""
    if not IDENTIFIER.match(name) or not isinstance(value, int) and not SETTING_VALUE.match(str(value)):
        raise StoreError(f"cannot set {name!r} to {value!r}")
    return f"SET {name} = {value}" if isinstance(value, int) else f"SET {name} = '{value}'"


def _read_only(settings: dict[str, Any]) -> dict[str, Any]:
    """`settings`, then `readonly = 1`: set last, it keeps the others as they are."""
    return {**{k: v for k, v in settings.items() if k != "readonly"}, "readonly": 1}


def engine_session(uri: str, settings: dict[str, Any], database: str | None = None) -> Any:
    """A chdb session of its own on the embedded engine whose connection string is `uri` (engine_uri), with
    `database` in use and `settings` SET in their order: what a query that must stream, or must not share
    another's state, runs on (the ClickHouse port's requests, EmbeddedReadOnly.stream). Closed by the caller."""
    conn = import_chdb().connect(uri)
    try:
        if database and database != "default":
            conn.query(f"USE {quote_identifier(database)}")
        for name, value in settings.items():
            conn.query(set_statement(name, value))
    except BaseException:
        conn.close()
        raise
    return conn


def open_server(url: str, backend: Backend = Backend.SERVER) -> Connection:
    """A ClickHouse server through clickhouse-connect over HTTP (no session: threads share the client)."""
    import clickhouse_connect
    try:
        client = clickhouse_connect.get_client(dsn=url, autogenerate_session_id=False, settings=ANALYST_DEFAULTS)
    except Exception as exc:
        raise StoreUnavailable(f"cannot connect to ClickHouse at {redact(url)}: {clean_message(exc)}") from exc
    return Connection(client, redact(url), url, backend)


def connect(settings: Settings, create: bool = True) -> Connection:
    """The configured ClickHouse: a server if `clickhouse_url` is set; else the embedded folder, through
    the service that owns it while `clipsearch serve` runs on it, or opened here (made if missing, unless
    `create` is false: then a folder without a database is an error)."""
    if settings.clickhouse_url:
        return open_server(settings.clickhouse_url)
    service = service_info(Path(settings.db))
    if service:
        connection = open_server(str(service["url"]), Backend.SERVED)
        connection.service = service
        return connection
    return EmbeddedConnection(settings.db, create, settings.read_sessions or READ_SESSIONS)


SERVE_FILE = ".clipsearch.serve"   # where a running `serve` says how to reach it (owner-only)
LOCK_FILE = ".clipsearch.lock"


# Store folders: the folders where clipsearch keeps its own files (an embedded store, a thumbnail cache) are
# marked, so that no load reads them as photos: `clipsearch load .` run in a photo folder that holds
# ./clipsearch-data would otherwise index the store's own thumbnails (and, watched, thumbnails of thumbnails).
STORE_MARKER = ".clipsearch-store"
MARKER_TEXT = ("clipsearch keeps its own files in this folder (a store, or its thumbnail cache);\n"
               "`clipsearch load` never reads it as photos.\n")


# -- private to the owner ------------------------------------------------------------------------------
# A store holds what its user searched for (search_log) and read from their photos; its folder is 0700 and its
# files 0600. Measured on chdb: it creates its folders and files with the process's umask (0755 and 0644
# under the usual 022), from its own threads at any time (merges), so a process that opens a store keeps a
# 077 umask from then on (keep_files_private), and opening a store made by an earlier release (or under a
# loose umask) takes group's and others' bits off what it holds (private_folder).
PRIVATE_UMASK = 0o077
# What the engine and clipsearch make at the top of a store folder: the files private_folder's upgrade
# changes, never others a user keeps in a folder they chose as the store's (the folder's 0700 covers those).
STORE_ENTRIES = frozenset({"metadata", "metadata_dropped", "store", "data", "tmp", "user_files", "format_schemas",
                           "flags", "access", "named_collections", "preprocessed_configs", "status", "uuid",
                           "user_defined", "thumbs", ".clipsearch-engine.xml", ".clipsearch.lock",
                           ".clipsearch-store", ".clipsearch.serve"})


def keep_files_private() -> None:
    """From now on this process creates files for its user alone (group and others lose every bit)."""
    os.umask(os.umask(PRIVATE_UMASK) | PRIVATE_UMASK)


def private_folder(folder: Path, entries: frozenset[str] | None = None) -> None:
    """Make `folder` (made if missing) its owner's alone: 0700, and when it was open to others, its `entries`
    (None: all) with group's and others' bits taken off, folders within included, links never followed.
    A folder this user cannot change (another's, a file system without modes) stays as it is unless others can
    write it: then StoreUnavailable, as anyone could replace what it holds."""
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    was = os.stat(folder)
    if stat.S_IMODE(was.st_mode) & PRIVATE_UMASK:
        try:
            os.chmod(folder, 0o700)
        except OSError:
            if was.st_mode & 0o022:
                raise StoreUnavailable(f"{folder} is writable by other users and cannot be made private (it is "
                                       "not yours); use a folder of your own") from None
            return
        for name in os.listdir(folder):
            if entries is None or name in entries:
                _take_others_bits(folder / name)


def _take_others_bits(top: Path) -> None:
    paths = [top] if not top.is_dir() or top.is_symlink() else [
        Path(here, name) for here, dirs, files in os.walk(top) for name in (".", *dirs, *files)]
    for path in paths:
        try:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and stat.S_IMODE(mode) & PRIVATE_UMASK:
                os.chmod(path, stat.S_IMODE(mode) & ~PRIVATE_UMASK)
        except OSError:   # gone meanwhile, or not this user's: the folder's own 0700 still covers it
            pass


def mark_store_folder(folder: str | os.PathLike) -> None:
    """Write the marker into `folder` (an existing folder) unless it is there."""
    marker = Path(folder) / STORE_MARKER
    if marker.exists():
        return
    try:
        marker.write_text(MARKER_TEXT)
    except OSError:   # a read-only folder: is_store_folder still knows a store by its engine's files
        pass


def is_store_folder(folder: str | os.PathLike) -> bool:
    """Whether `folder` is a clipsearch store or thumbnail cache: marked, or made before markers existed (the
    embedded store's lock or engine file, or a chdb/ClickHouse data folder: its `metadata/default` database
    entry beside `store/`, which is what an embedded store folder holds)."""
    folder = Path(folder)
    return (any(os.path.isfile(folder / name) for name in (STORE_MARKER, LOCK_FILE, ENGINE_CONFIG))
            or (os.path.lexists(folder / "metadata" / "default") and os.path.isdir(folder / "store")))


def store_holding(path: str | os.PathLike, memo: dict[Path, Path | None] | None = None) -> Path | None:
    """The store folder that is `path` or holds it (`path` absolute and resolved), or None. `memo` keeps the
    answers for folders already asked about, for many paths in few folders."""
    memo = {} if memo is None else memo
    path = Path(path)
    asked = []
    found: Path | None = None
    for folder in (path, *path.parents):
        if folder in memo:
            found = memo[folder]
            break
        asked.append(folder)
        if is_store_folder(folder):
            found = folder
            break
    for folder in asked:   # each lies in `found`, or in no store when there is none
        memo[folder] = found
    return found


def service_info(folder: Path) -> dict | None:
    """What the `serve` that holds `folder` says of itself, if one does: {"url": its ClickHouse HTTP URL
    with credentials, "model": {label, dim, logit_scale} of the model it holds}. Raises StoreUnavailable
    for a serve file that is not trusted (trusted_serve_file)."""
    try:
        folder_fd = os.open(folder.expanduser(), os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        # read: a store on a read-only disk is still served
        with open(os.open(LOCK_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=folder_fd)) as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:   # held: a service (or a command) has the store open
                return trusted_serve_file(folder.expanduser(), folder_fd)
            fcntl.flock(lock, fcntl.LOCK_UN)
    except (OSError, ValueError, KeyError, TypeError):
        return None
    finally:
        os.close(folder_fd)
    return None                           # a file left by a service that is gone


MAX_SERVE_FILE = 1 << 16
UNTRUSTED = ("commands use a serve file only when it is yours and no one else can write it or its folder (anyone "
             "who could would point them, with the service's password, at a listener of theirs). If it is your "
             "`clipsearch serve`'s, make the folder private (chmod 700 FOLDER); else remove the file")


def trusted_serve_file(folder: Path, folder_fd: int) -> dict | None:
    """The serve file in `folder` (open as `folder_fd`) as JSON, None when there is none or it is unreadable,
    and StoreUnavailable when it cannot be trusted: a link, not this user's, or writable by others (the file or
    its folder). Read through the folder's descriptor without following links, checked on what was opened."""
    path = folder / SERVE_FILE
    try:
        fd = os.open(SERVE_FILE, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=folder_fd)
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise StoreUnavailable(f"{path} is not used: it is a symbolic link; {UNTRUSTED}") from None
        return None   # none, or not readable by this user: not this user's service
    with os.fdopen(fd, "rb") as f:
        mine, held_in = os.fstat(f.fileno()), os.fstat(folder_fd)
        problem = ("it is not a regular file" if not stat.S_ISREG(mine.st_mode)
                   else "it belongs to another user" if mine.st_uid != os.geteuid()
                   else "other users can write it" if mine.st_mode & 0o022
                   else "its folder belongs to another user" if held_in.st_uid not in (os.geteuid(), 0)
                   else "other users can write its folder" if held_in.st_mode & 0o022
                   else None)
        if problem:
            raise StoreUnavailable(f"{path} is not used: {problem}; {UNTRUSTED}")
        info = json.loads(f.read(MAX_SERVE_FILE))
    str(info["url"])
    return info if isinstance(info, dict) else None


def bindable(params: dict | None) -> dict | None:
    """Parameters as the driver binds them, a list of floats (a query vector) written as the engine's text in one
    join: the driver formats each float on its own, which at 512 dimensions cost a search 0.7 ms (repr is each
    float's shortest exact text, as the driver's own)."""
    if not params:
        return None
    return {name: "[" + ",".join(map(repr, value)) + "]"
            if isinstance(value, list) and value and all(type(x) is float for x in value) else value
            for name, value in params.items()}


def running_service(folder: Path) -> str | None:
    """The ClickHouse HTTP URL (with its credentials) of the `serve` that holds `folder`, if one does."""
    info = service_info(folder)
    return str(info["url"]) if info else None


def announce_service(folder: Path, url: str, model: dict | None = None) -> Path:
    """Write the serve file: the URL with the per-run password, and the model the service holds (so that
    commands embed their texts with it), readable by this user alone."""
    path = folder / SERVE_FILE
    partial = path.with_name(f"{SERVE_FILE}.{os.getpid()}")   # renamed into place: never read half written
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump({"pid": os.getpid(), "url": url, "model": model}, f)
    os.replace(partial, path)
    return path
