"""The product's ClickHouse HTTP interface (clipsearch.service.clickhouse_http, what `serve` runs on its
second port) on its own, for the server-backend tests: user `default` with an empty password, any database.

    python -m tests.clickhouse_http --db DIR --port PORT

No ClickHouse server package runs on our CI machines, so the server-backend tests talk to this
instead: clickhouse-connect's real HTTP client, its parameter binding and its Arrow inserts, answered
by the same ClickHouse engine the embedded store uses.
"""
from __future__ import annotations

import argparse

from waitress import serve

from clipsearch.service.clickhouse_http import ClickHouseHTTP
from clipsearch.store.connection import engine_uri


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db", required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    serve(ClickHouseHTTP(engine_uri(args.db), writer_password="", writer_user="default"), host="127.0.0.1",
          port=args.port, threads=4, asyncore_use_poll=True)


if __name__ == "__main__":
    main()
