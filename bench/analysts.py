"""Analysts at once on a served folder's ClickHouse HTTP port: how long the CLI's query (the `clipsearch`
login), a second analyst's query and a page search wait while 20 slow analyst queries (3 s each) run, from
one analyst's session and from 20 sessions at once, against the same requests on an idle service; and how
long a page search waits while 10 senders loop slow queries on the page's SQL tab (its turns)."""
from __future__ import annotations

import base64
import json
import os
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import clickhouse_connect

import clipsearch
from bench.common import get, ms_stats, search_url, serve_with_analysts, write_images
from clipsearch.models.clip import ClipModel

PASSWORD = os.environ.get("BENCH_ANALYST_PASSWORD", "bench-analyst")
SLOW = "SELECT count() FROM numbers(100000000000) WHERE sipHash64(number) = 0"   # busy until its 3 s run out


def _post(sql_port: int, sql: str, session: str, settings: dict | None = None) -> int:
    """An analyst's query as curl sends it; its HTTP status."""
    query = urllib.parse.urlencode({**(settings or {}), "session_id": session})
    request = urllib.request.Request(f"http://127.0.0.1:{sql_port}/?{query}", data=sql.encode(), headers={
        "Authorization": "Basic " + base64.b64encode(f"analyst:{PASSWORD}".encode()).decode()})
    try:
        with urllib.request.urlopen(request, timeout=300) as response:
            response.read()
            return response.status
    except urllib.error.HTTPError as error:
        return error.code


def _slow(sql_port: int, session: str, statuses: list[int]) -> None:
    statuses.append(_post(sql_port, SLOW, session, {"max_execution_time": 3, "timeout_overflow_mode": "break"}))


def _waits(cli: object, sql_port: int, base: str, rounds: int = 10) -> tuple[dict[str, list[float]], int]:
    """The wait of the CLI's query, a second analyst's (a session of its own) and a page search, `rounds` times;
    and how many of the second analyst's were refused."""
    out: dict[str, list[float]] = {"cli": [], "analyst": [], "page": []}
    refused = 0
    for _ in range(rounds):
        t = time.perf_counter()
        cli.query("SELECT count() FROM images")
        out["cli"].append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        if _post(sql_port, "SELECT count() FROM images", "second-analyst") == 200:
            out["analyst"].append((time.perf_counter() - t) * 1000)
        else:
            refused += 1
        t = time.perf_counter()
        get(search_url(base, {"q": "a red circle", "k": 10})).close()
        out["page"].append((time.perf_counter() - t) * 1000)
        time.sleep(0.1)
    return out, refused


def _sql_tab_loop(base: str, stop: threading.Event, statuses: list[int]) -> None:
    """One sender looping a slow query on the page's SQL tab (POST /api/sql, as the page sends it)."""
    body = json.dumps({"sql": SLOW}).encode()
    while not stop.is_set():
        request = urllib.request.Request(f"{base}/api/sql", data=body, headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=300) as response:
                response.read()
                statuses.append(response.status)
        except urllib.error.HTTPError as error:
            statuses.append(error.code)
            if error.code == 429:
                time.sleep(0.05)   # "try again shortly"


def _page_searches(base: str, rounds: int) -> list[float]:
    out = []
    for _ in range(rounds):
        t = time.perf_counter()
        get(search_url(base, {"q": "a red circle", "k": 10})).close()
        out.append((time.perf_counter() - t) * 1000)
        time.sleep(0.1)
    return out


def run(work: Path, images: int = 500, burst: int = 20, sql_tab_senders: int = 10) -> dict:
    db = work / "db-analysts"
    subprocess.run(["rm", "-rf", str(db)], check=True)
    paths = write_images(work / "analysts-images", images, seed=41)
    with clipsearch.open(db, model=ClipModel(), log_searches=False) as photos:
        photos.load(paths[0].parent)
    result: dict = {"images": images, "burst": burst, "burst_query_s": 3}
    with serve_with_analysts(db, PASSWORD, work / "analysts-serve.log") as (base, sql_port, env):
        writer_url = json.loads((db / ".clipsearch.serve").read_text())["url"]
        cli = clickhouse_connect.get_client(dsn=writer_url, autogenerate_session_id=False)
        _waits(cli, sql_port, base, rounds=2)   # warm
        for name, values in _waits(cli, sql_port, base)[0].items():
            result.update(ms_stats(values, f"idle_{name}"))
        for case, session in (("one_session", lambda i: "burst"), ("many_sessions", lambda i: f"burst-{i}")):
            statuses: list[int] = []
            threads = [threading.Thread(target=_slow, args=(sql_port, session(i), statuses)) for i in range(burst)]
            for t in threads:
                t.start()
            time.sleep(0.5)
            waits, refused = _waits(cli, sql_port, base, rounds=5)
            for name, values in waits.items():
                result.update(ms_stats(values or [float("nan")], f"{case}_{name}"))
                result[f"{case}_{name}_max_ms"] = round(max(values), 1) if values else None
            result[f"{case}_analyst_refused"] = refused
            for t in threads:
                t.join()
            result[f"{case}_ran"] = statuses.count(200)
            result[f"{case}_refused"] = statuses.count(503)
        cli.close()
        # The page's SQL tab: senders loop a query that runs to the tab's time limit; searches keep threads
        stop, tab_statuses = threading.Event(), []
        senders = [threading.Thread(target=_sql_tab_loop, args=(base, stop, tab_statuses))
                   for _ in range(sql_tab_senders)]
        for t in senders:
            t.start()
        time.sleep(1.0)
        result.update(ms_stats(_page_searches(base, 40), "sql_tab_page"))
        stop.set()
        for t in senders:
            t.join()
        result["sql_tab_senders"] = sql_tab_senders
        result["sql_tab_statuses"] = {str(code): tab_statuses.count(code) for code in sorted(set(tab_statuses))}
    return result
