"""A test-only ClickHouse HTTP endpoint over the embedded engine (chdb).

    python -m tests.clickhouse_http --db DIR --port PORT

No ClickHouse server package runs on our CI machines, so the server-backend
tests talk to this instead: clickhouse-connect's real HTTP client, its
parameter binding and its Arrow inserts, answered by the same ClickHouse
engine the embedded store uses. It speaks only what clickhouse-connect needs:
the SQL in the body (or `query=` with the insert data in the body),
`param_*` query parameters, `database=`, a FORMAT clause or `default_format`,
compressed request bodies, and errors as HTTP 500 with ClickHouse's message
and `X-ClickHouse-Exception-Code`. Per-query settings are ignored.
"""
from __future__ import annotations

import argparse
import gzip
import os
import re
import tempfile
import threading

import chdb
from werkzeug.serving import run_simple
from werkzeug.wrappers import Request, Response

FORMAT_RE = re.compile(r"\s+FORMAT\s+(\w+)\s*;?\s*$", re.I)
INSERT_RE = re.compile(r"^\s*(INSERT\s+INTO\s+.+?)\s+FORMAT\s+(\w+)\s*$", re.I | re.S)


def _decompress(data: bytes, encoding: str | None) -> bytes:
    if not encoding:
        return data
    if encoding == "gzip":
        return gzip.decompress(data)
    if encoding == "lz4":
        import lz4.frame
        return lz4.frame.decompress(data)
    if encoding == "zstd":
        import zstandard
        return zstandard.ZstdDecompressor().decompress(data)
    raise ValueError(f"unsupported Content-Encoding {encoding}")


class ClickHouseHTTP:
    def __init__(self, path: str):
        self.conn = chdb.connect(path)
        self.lock = threading.Lock()

    def __call__(self, environ, start_response):
        request = Request(environ)
        try:
            response = self.handle(request)
        except Exception as exc:  # every engine error goes back the way a server sends it
            message = str(exc)
            code = re.search(r"Code: (\d+)", message)
            response = Response(message + "\n", status=500, content_type="text/plain; charset=UTF-8",
                                headers={"X-ClickHouse-Exception-Code": code.group(1) if code else "1000"})
        return response(environ, start_response)

    def handle(self, request: Request) -> Response:
        # clickhouse-connect sends large parameters (and then the query) as form fields in the body.
        form = request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data")
        args = {**request.args, **request.form} if form else request.args
        body = b"" if form else _decompress(request.get_data(), request.headers.get("Content-Encoding"))
        params = {k[len("param_"):]: v for k, v in args.items() if k.startswith("param_")}
        if args.get("query"):
            sql, data = args["query"], body
        else:
            sql, data = body.decode(), b""
        with self.lock:
            database = args.get("database")
            if database:
                self.conn.query(f"USE `{database.replace('`', '')}`")
            if data:
                return self.insert(sql, data)
            match = FORMAT_RE.search(sql)
            fmt = match.group(1) if match else args.get("default_format", "TabSeparated")
            sql = FORMAT_RE.sub("", sql) if match else sql
            result = self.conn.query(sql, fmt, params=params)
        payload = result.bytes() if result is not None else b""
        return Response(payload, headers={"X-ClickHouse-Format": fmt, "X-ClickHouse-Timezone": "UTC",
                                          "X-ClickHouse-Summary": '{"read_rows":"0"}'})

    def insert(self, sql: str, data: bytes) -> Response:
        match = INSERT_RE.match(sql)
        if not match:
            raise ValueError("Code: 62. DB::Exception: expected INSERT INTO ... FORMAT <format> with data")
        fd, path = tempfile.mkstemp(suffix=".data")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.conn.query(f"{match.group(1)} SELECT * FROM file('{path}', '{match.group(2)}')")
        finally:
            os.unlink(path)
        return Response(b"", headers={"X-ClickHouse-Summary": '{"written_rows":"0"}'})


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    run_simple("127.0.0.1", args.port, ClickHouseHTTP(args.db), threaded=True)


if __name__ == "__main__":
    main()
