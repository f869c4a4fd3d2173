"""What a request to ClickHouse's HTTP interface carries, read as ClickHouse reads it (service/clickhouse_http.py
answers it): errors named as ClickHouse names them, and the body: its Content-Encoding (gzip, deflate, zstd,
lz4), ClickHouse's own compressed blocks (`decompress=1`), and the split of a body into the query and an
INSERT's data (`INSERT INTO t FORMAT Native` and then the rows, in the body or after `query=` in the URL).

A body is decompressed as it is read, never whole: at most `limit` bytes come out however small the body
that makes them (a zip bomb is a 413), and an INSERT's data goes to a temporary file the engine reads with
`INSERT ... FROM INFILE`, so the rows are parsed as a server parses them (the table's own types, the column
list, input format settings).
"""
from __future__ import annotations

import re
import tempfile
import zlib
from collections.abc import Callable, Iterable, Iterator
from typing import IO, Any

CHUNK = 64 * 1024
# ClickHouse's HTTP status for an error code (its exceptionCodeToHTTPStatus: bad input 400, unknown names
# 404, timeouts 408); and this port's own: a read-only refusal 403, a failed login 401 (with the header that
# tells a browser to ask), too many queries waiting 503, a result over its bounds 400, a session another
# request holds 423. 500 for the rest.
HTTP_STATUS = {**dict.fromkeys((6, 8, 15, 25, 26, 27, 36, 38, 41, 44, 53, 62, 72, 117, 131, 167, 168, 306, 321,
                                374, 395, 396, 427, 241, 718),
                               400),
               **dict.fromkeys((46, 47, 50, 56, 60, 63, 73, 81, 115, 372), 404),
               **dict.fromkeys((164, 192, 193, 291, 497), 403), 194: 401, 516: 401, 48: 501, 159: 408, 202: 503,
               373: 423}


class ClickHouseError(Exception):
    """An error to answer the way a ClickHouse server does: `Code: N. DB::Exception: ...`."""

    def __init__(self, code: int, message: str, name: str, status: int | None = None,
                 retry_after_s: int | None = None):
        super().__init__(f"Code: {code}. DB::Exception: {message}. ({name})")
        self.code, self.status = code, status or HTTP_STATUS.get(code, 500)
        self.retry_after_s = retry_after_s   # a Retry-After header: the refusal passes shortly


def too_large(limit: int) -> ClickHouseError:
    return ClickHouseError(36, f"the request body is larger than {limit} bytes (decompressed)", "BAD_ARGUMENTS", 413)


# -- Content-Encoding ------------------------------------------------------------------------------------
def _zstd() -> Any:
    """The zstd module clickhouse-connect itself uses (the standard library's from Python 3.14)."""
    try:
        from compression import zstd  # type: ignore[import-not-found]
    except ImportError:
        try:
            from backports import zstd  # type: ignore[no-redef]
        except ImportError:
            return None
    return zstd


def _lz4() -> Any:
    try:
        import lz4.block
        import lz4.frame
    except ImportError:
        return None
    return lz4


def encodings() -> list[str]:
    """The Content-Encodings this port reads (ClickHouse also reads br, xz, bz2 and snappy)."""
    return ["gzip", "deflate"] + (["zstd"] if _zstd() else []) + (["lz4"] if _lz4() else [])


def decoded(chunks: Iterable[bytes], encoding: str | None) -> Iterator[bytes]:
    """The body `chunks` decoded from `encoding` (a Content-Encoding), a piece of at most CHUNK bytes at a time."""
    encoding = (encoding or "").strip().lower()
    if encoding in ("", "identity", "none"):
        return iter(chunks)
    if encoding in ("gzip", "x-gzip", "deflate"):
        return _guarded(_zlib(chunks), encoding)
    if encoding == "zstd" and _zstd():
        return _guarded(_frames(_zstd().ZstdDecompressor, chunks), encoding)
    if encoding == "lz4" and _lz4():
        return _guarded(_frames(_lz4().frame.LZ4FrameDecompressor, chunks), encoding)
    # 415 Unsupported Media Type, with the encodings this port reads
    raise ClickHouseError(36, f"unsupported Content-Encoding {encoding[:40]!r}: send the body plain or as "
                              f"{', '.join(encodings())}", "BAD_ARGUMENTS", 415)


def _guarded(chunks: Iterator[bytes], what: str) -> Iterator[bytes]:
    """A body that is not what it says it is: 400 with the encoding, not the library's words."""
    try:
        yield from chunks
    except ClickHouseError:
        raise
    except Exception:
        raise ClickHouseError(36, f"cannot decompress the request body as {what[:40]}", "BAD_ARGUMENTS",
                              400) from None


def _zlib(chunks: Iterable[bytes]) -> Iterator[bytes]:
    """gzip or zlib (told apart by the header), members one after another as gzip allows."""
    inflater, fed = zlib.decompressobj(wbits=47), False
    for data in chunks:
        while data:
            fed = True
            out = inflater.decompress(data, CHUNK)
            if out:
                yield out
            if inflater.eof:
                data, inflater, fed = inflater.unused_data, zlib.decompressobj(wbits=47), False
            else:
                data = inflater.unconsumed_tail
    if fed:
        yield inflater.flush()
        if not inflater.eof:
            raise ValueError("truncated")


def _frames(new: Callable[[], Any], chunks: Iterable[bytes]) -> Iterator[bytes]:
    """zstd or lz4 frames one after another (clickhouse-connect compresses each insert block as a frame), through
    decompressors with the bz2 interface: output at most CHUNK at a time."""
    decompressor, fed = new(), False
    for data in chunks:
        while True:
            if decompressor.eof:
                data, decompressor, fed = (decompressor.unused_data or b"") + data, new(), False
                if not data:
                    break
            fed = fed or bool(data)
            out = decompressor.decompress(data, CHUNK)
            data = b""
            if out:
                yield out
            if not decompressor.eof and decompressor.needs_input:
                break
    if fed and not decompressor.eof:
        raise ValueError("truncated")


# -- ClickHouse's compressed blocks (decompress=1) ----------------------------------------------------------
# A block: a 16-byte checksum (CityHash128, not checked here: no library for it is at hand; the
# decompressors check their own framing), a method byte, the compressed size (with the 9 header bytes) and
# the decompressed size, both little-endian UInt32.
METHODS = {0x02: "none", 0x82: "lz4", 0x90: "zstd"}


def blocks(chunks: Iterable[bytes], limit: int) -> Iterator[bytes]:
    """ClickHouse's compressed blocks in `chunks`, decompressed; none may say it holds more than `limit` bytes."""
    buffer = bytearray()
    for chunk in chunks:
        buffer += chunk
        while len(buffer) >= 25:
            method = METHODS.get(buffer[16])
            size, raw = int.from_bytes(buffer[17:21], "little"), int.from_bytes(buffer[21:25], "little")
            if method is None or size < 9:
                raise ClickHouseError(271, f"unknown compression method {buffer[16]:#x} in a compressed block "
                                           "(decompress=1 expects ClickHouse's block format)",
                                      "CANNOT_DECOMPRESS", 400)
            if raw > limit:
                raise too_large(limit)
            if len(buffer) < 16 + size:
                break
            payload = bytes(buffer[25:16 + size])
            del buffer[:16 + size]
            yield _block(method, payload, raw)
    if buffer:
        raise ClickHouseError(271, "the request body ends inside a compressed block", "CANNOT_DECOMPRESS", 400)


def _block(method: str, payload: bytes, raw: int) -> bytes:
    try:
        if method == "lz4" and _lz4():
            out = _lz4().block.decompress(payload, uncompressed_size=raw)
        elif method == "zstd" and _zstd():
            out = _zstd().ZstdDecompressor().decompress(payload, max_length=raw + 1)
        elif method == "none":
            out = payload
        else:
            raise ClickHouseError(271, f"{method} blocks cannot be read here", "CANNOT_DECOMPRESS", 400)
    except ClickHouseError:
        raise
    except Exception:
        out = b""
    if len(out) != raw:
        raise ClickHouseError(271, f"cannot decompress a {method} block", "CANNOT_DECOMPRESS", 400)
    return out


def capped(chunks: Iterable[bytes], limit: int, total: int = 0) -> Iterator[bytes]:
    """`chunks`, refused (413) once they come to more than `limit` bytes (`total` of them already came)."""
    for chunk in chunks:
        total += len(chunk)
        if total > limit:
            raise too_large(limit)
        yield chunk


# -- the query and its data ----------------------------------------------------------------------------------
# How far into a body an INSERT's header is looked for (ClickHouse's max_query_size: the query part of an
# INSERT is parsed from at most this much).
HEAD_BYTES = 256 * 1024
# `INSERT INTO ... FORMAT name` and where its data starts: after spaces, and one line break if there is one.
# The header holds no VALUES or SELECT (`INSERT ... VALUES ('FORMAT x')` is SQL); quoted names and strings may
# hold any word (a column named `format`).
QUOTED_OR_NOT = rb"(?:`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|(?!\b(?:VALUES|SELECT|FORMAT)\b)[^`\"'])"
QUOTED_OR_ANY = rb"(?:`(?:[^`\\]|\\.)*`|\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|[^`\"'])"
INSERT_HEAD = re.compile(rb"^\s*(?P<sql>(?:WITH\b" + QUOTED_OR_ANY + rb"*?)?INSERT\s+INTO\s+" + QUOTED_OR_NOT
                         + rb"+?)\s+FORMAT\s+(?P<fmt>\w+)[ \t\f]*(?:\r?\n)?", re.I | re.S)


class Body:
    """A request's SQL and, for an INSERT with data, the file that holds the data (deleted by close())."""

    def __init__(self, sql: str, fmt: str | None = None, data: IO[bytes] | None = None):
        self.sql, self.format, self.data = sql, fmt, data

    def close(self) -> None:
        if self.data is not None:
            self.data.close()


def split(url_query: str, chunks: Iterable[bytes], sql_limit: int, data_limit: int) -> Body:
    """The query (`url_query`, then the body, joined by a line break as ClickHouse joins them) and, for an
    `INSERT ... FORMAT name` with data after it, that data spooled to a temporary file. The SQL may be at most
    `sql_limit` bytes, an INSERT's data `data_limit` (413 past either)."""
    stream = iter(chunks)
    head = bytearray((url_query + "\n").encode() if url_query else b"")
    for chunk in stream:
        head += chunk
        if len(head) >= HEAD_BYTES:
            break
    match = INSERT_HEAD.match(bytes(head[:HEAD_BYTES]))
    if match and not head[match.end():match.end() + 1] == b";":
        data = tempfile.NamedTemporaryFile(prefix="clipsearch-insert-", suffix=".data")
        try:
            total = len(head) - match.end()
            if total > data_limit:
                raise too_large(data_limit)
            data.write(head[match.end():])
            for chunk in capped(stream, data_limit, total):
                data.write(chunk)
            data.flush()
        except BaseException:
            data.close()
            raise
        return Body(match.group("sql").decode("utf-8", "replace"), match.group("fmt").decode(), data)
    for chunk in stream:
        head += chunk
        if len(head) > sql_limit:
            raise ClickHouseError(36, f"the query is larger than {sql_limit} bytes", "BAD_ARGUMENTS", 413)
    if len(head) > sql_limit:
        raise ClickHouseError(36, f"the query is larger than {sql_limit} bytes", "BAD_ARGUMENTS", 413)
    try:
        text = head.decode("utf-8")
        return Body(url_query if url_query and len(text) == len(url_query) + 1 else text)
    except UnicodeDecodeError:
        raise ClickHouseError(62, "the SQL is not valid UTF-8 (insert data goes after INSERT INTO ... FORMAT "
                                  "name)", "SYNTAX_ERROR") from None
