#!/usr/bin/env bash
# ClickHouse's own Python client's integration tests (ClickHouse/clickhouse-connect, tests/integration_tests)
# against `clipsearch serve`'s ClickHouse HTTP port, with the read-write login from the serve file (issue 40).
# The suite is not copied into this repository: pass a checkout of it, or let this clone one.
#
#   scripts/clickhouse_connect_suite.sh [CHECKOUT] [-- extra pytest arguments]
#
# CHECKOUT: a clickhouse-connect checkout (default: a clone of the release 1.8 branch in
# $TMPDIR/clickhouse-connect). Needs: clipsearch, clickhouse-connect 1.13, pytest-asyncio, aiohttp, polars
# and alembic in the Python on PATH. Serves a fresh empty folder on free ports and stops it after; prints
# pytest's summary and the commit of the suite it ran. The suite's `-n 4` (xdist) option is dropped.
set -euo pipefail

checkout="${1:-}"
[[ $# -gt 0 ]] && shift
[[ "${1:-}" == "--" ]] && shift
if [[ -z "$checkout" ]]; then
    checkout="${TMPDIR:-/tmp}/clickhouse-connect"
    [[ -d "$checkout/.git" ]] || git clone --depth 1 --branch release_1.8 \
        https://github.com/ClickHouse/clickhouse-connect.git "$checkout"
fi
[[ -d "$checkout/tests/integration_tests" ]] || { echo "no tests/integration_tests in $checkout" >&2; exit 2; }

work="$(mktemp -d)"
free_port() { python -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
web_port="$(free_port)"
sql_port="$(free_port)"
env -u CLICKHOUSE_URL clipsearch serve --db "$work/db" --port "$web_port" --sql-port "$sql_port" \
    >"$work/serve.log" 2>&1 &
serve_pid=$!
trap 'kill "$serve_pid" 2>/dev/null || true; wait "$serve_pid" 2>/dev/null || true; rm -rf "$work"' EXIT
for _ in $(seq 90); do
    [[ -f "$work/db/.clipsearch.serve" ]] && curl -sf "http://127.0.0.1:$sql_port/ping" >/dev/null && break
    kill -0 "$serve_pid" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
    sleep 1
done

# the read-write login and its password, from the serve file (owner-only)
read -r user password < <(python - "$work/db/.clipsearch.serve" <<'EOF'
import json, sys, urllib.parse
url = urllib.parse.urlsplit(json.load(open(sys.argv[1]))["url"])
print(urllib.parse.unquote(url.username or ""), urllib.parse.unquote(url.password or ""))
EOF
)

echo "suite: $(git -C "$checkout" rev-parse --verify -q HEAD || echo unknown) ($checkout)"
# Run a copy of its tests and pytest settings, away from the checkout's own clickhouse_connect source (no compiled
# parts): the client under test is the installed one.
mkdir "$work/suite"
cp -r "$checkout/tests" "$checkout/pyproject.toml" "$work/suite/"
cd "$work/suite"
CLICKHOUSE_CONNECT_TEST_HOST=127.0.0.1 CLICKHOUSE_CONNECT_TEST_PORT="$sql_port" \
CLICKHOUSE_CONNECT_TEST_USER="$user" CLICKHOUSE_CONNECT_TEST_PASSWORD="$password" \
CLICKHOUSE_CONNECT_TEST_DOCKER=False \
    python -m pytest tests/integration_tests -p no:cacheprovider -o addopts="" -q -rf "$@" || true
