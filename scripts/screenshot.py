"""Screenshot the page in headless Chromium: the search tab with a search run, or the SQL or Dashboard tab.

    python scripts/screenshot.py [--db ./clipsearch-data] [--query "a red circle"] [--out docs/screenshot.png]
    python scripts/screenshot.py --demo /tmp/shot --tab sql --out docs/sql-console.png
    python scripts/screenshot.py --demo /tmp/shot --tab dashboard --out docs/dashboard.png

The search tab: starts `clipsearch serve` on a free loopback port, loads /?q=QUERY (the page runs the
search on load), saves the PNG and prints how many result cards the page rendered.

--tab sql loads /?tab=sql&sql=SQL (the page runs it on load; --sql, default a vector search in SQL) and
--tab dashboard loads /?tab=dashboard; both serve the app in this process and check the DOM (a result
table; every panel drawn or saying why not). --demo DIR first builds a demo database in DIR (once): the
demo catalogue (--demo-images) with its files' dates spread over the past year, four files that cannot
be loaded, and --demo-searches real searches whose log rows are then spread over the past day, so the
per-hour and per-month charts have a shape. Needs Debian's `chromium` package.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--hide-scrollbars", "--virtual-time-budget=15000"]


def find_chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(db: str | None, port: int) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "clipsearch.service.cli", "serve", "--port", str(port)] + (["--db", db] if db else [])
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    for _ in range(120):
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"serve exited: {proc.stdout.read()}") from None
            time.sleep(0.5)
    proc.kill()
    raise SystemExit("serve did not start")


def render(url: str, out: Path | None, size=(1280, 900)) -> str:
    """Load `url` in headless Chromium; save a screenshot to `out` if given; return the rendered DOM."""
    chromium = find_chromium()
    if not chromium:
        raise SystemExit("chromium not found: apt-get install chromium")
    with tempfile.TemporaryDirectory() as profile:
        flags = CHROMIUM_FLAGS + [f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        dom = subprocess.run([chromium, *flags, "--dump-dom", url], capture_output=True, text=True,
                             timeout=120).stdout
        if out:
            out.parent.mkdir(parents=True, exist_ok=True)
            subprocess.run([chromium, *flags, f"--screenshot={out}", url], capture_output=True, timeout=120)
    return dom


DEFAULT_SQL = """-- Vector search in plain SQL: the 12 posters under 20 most like a description
SELECT path, category, price, round(1 - cosineDistance(embedding, clipTextEmbedding('a red circle')), 4) AS score
FROM images
WHERE category = 'poster' AND price < 20
ORDER BY score DESC
LIMIT 12"""
DEMO_SEARCHES_WITH_FILTERS = [[]] * 8 + [["price<20"], ["price<20"], ["category=poster"], ["category=poster"],
                                          ["price>=50", "category=badge"], ["category=sofa"], ["width>=4000"]]
# (the last two find nothing)


def build_demo(folder: Path, images: int, searches: int) -> Path:
    """A demo database in `folder`/db (made once): see the module's description. Returns the db folder."""
    import numpy as np

    import clipsearch
    from clipsearch.service import shapes as world

    db = folder / "db"
    if (db / "metadata").is_dir():
        return db
    manifest = world.make_catalogue(folder / "catalogue", images)
    now = time.time()
    rng = np.random.default_rng(11)
    for path in sorted((folder / "catalogue" / "images").iterdir()):
        # the images' dates: spread over the past year, more of them recent
        stamp = now - 365 * 86400 * float(rng.beta(1.2, 2.5))
        os.utime(path, (stamp, stamp))
    bad = folder / "catalogue" / "unreadable"
    bad.mkdir(exist_ok=True)
    (bad / "empty.jpg").write_bytes(b"")
    (bad / "notes.png").write_text("not an image\n")
    first = sorted((folder / "catalogue" / "images").glob("*.jpg"))[0]
    (bad / "truncated.jpg").write_bytes(first.read_bytes()[:400])
    (bad / "half.jpg").write_bytes(first.read_bytes()[:200])
    with clipsearch.open(db, log_searches=True) as photos:
        print(photos.load(manifest), flush=True)
        print(photos.load(bad), flush=True)
        start = photos.sql("SELECT now64(3) AS t")[0]["t"]
        ids = [r["id"] for r in photos.sql("SELECT id FROM images ORDER BY id LIMIT 50")]
        colours, shapes = list(world.COLOURS), list(world.SHAPES)
        for i in range(searches):
            if i % 9 == 8:
                photos.search(similar=str(rng.choice(ids)), k=12)
                continue
            # a few favourite queries, and a long tail
            colour = colours[min(int(rng.exponential(1.6)), len(colours) - 1)]
            shape = shapes[min(int(rng.exponential(1.3)), len(shapes) - 1)]
            text = world.query_text(colour, shape, "es" if i % 7 == 3 else "en")
            filters = DEMO_SEARCHES_WITH_FILTERS[int(rng.integers(len(DEMO_SEARCHES_WITH_FILTERS)))]
            photos.search(text, k=24, filters=filters)
        # the searches ran just now: spread their log rows over the past 24 hours
        photos.sql("INSERT INTO search_log SELECT * REPLACE (time - toIntervalMillisecond("
                   "3600000 + cityHash64(time, text, k) % (23 * 3600000)) AS time) "
                   "FROM (SELECT * FROM search_log WHERE time >= {start:DateTime64(3)})", {"start": start})
        photos.sql("DELETE FROM search_log WHERE time >= {start:DateTime64(3)}", {"start": start})
        print(photos.sql("SELECT count() AS searches, min(time) AS first, max(time) AS last FROM search_log")[0])
    return db


def serve_here(db: Path):
    """The app over the embedded store `db`, served by waitress on a free loopback port in this process;
    returns (its address, a function that stops it)."""
    import threading

    from waitress.server import create_server

    from clipsearch.service.app import create_app
    from clipsearch.settings import Settings
    app = create_app(Settings(db=str(db)))
    server = create_server(app, host="127.0.0.1", port=0, threads=4)
    threading.Thread(target=server.run, daemon=True).start()

    def stop() -> None:
        server.close()
        app.extensions["clipsearch"].close()
    return f"http://127.0.0.1:{server.effective_port}/", stop


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db")
    parser.add_argument("--query", default="a red circle")
    parser.add_argument("--params", default="", help="more of the search's address, e.g. 'min_score=0.4&minus=red'")
    parser.add_argument("--tab", choices=["search", "sql", "dashboard"], default="search")
    parser.add_argument("--sql", default=DEFAULT_SQL, help="--tab sql: the SQL the console runs")
    parser.add_argument("--demo", type=Path, help="build (once) and use a demo database in this folder")
    parser.add_argument("--demo-images", type=int, default=2000)
    parser.add_argument("--demo-searches", type=int, default=400)
    parser.add_argument("--width", type=int, default=1280)
    parser.add_argument("--height", type=int, help="default 900 (1500 for the dashboard)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    db = build_demo(args.demo, args.demo_images, args.demo_searches) if args.demo else args.db
    size = (args.width, args.height or (1500 if args.tab == "dashboard" else 900))
    if args.tab != "search":
        out = args.out or ROOT / "docs" / ("sql-console.png" if args.tab == "sql" else "dashboard.png")
        url, stop = serve_here(Path(db or os.environ.get("CLIPSEARCH_DB", "./clipsearch-data")))
        try:
            address = "?" + urllib.parse.urlencode({"tab": "sql", "sql": args.sql} if args.tab == "sql"
                                                   else {"tab": "dashboard"})
            dom = render(url + address, out, size)
        finally:
            stop()
        if args.tab == "sql":
            rows = len(re.findall(r"<tr>", dom)) - 1
            status = re.search(r'<span id="sql-status"[^>]*>([^<]*)<', dom)
            print(f"{max(rows, 0)} result rows rendered ({status.group(1) if status else 'no status'}); "
                  f"screenshot saved to {out}")
            return 0 if rows > 0 else 1
        states = re.findall(r'<figure class="panel" data-file="([^"]+)" data-state="([^"]+)"', dom)
        print(", ".join(f"{f}: {s}" for f, s in states) + f"; screenshot saved to {out}")
        return 0 if states and all(s in ("drawn", "empty") for _, s in states) else 1
    args.out = args.out or ROOT / "docs" / "screenshot.png"
    port = free_port()
    server = start_server(str(db) if db else None, port)
    try:
        address = urllib.parse.urlencode({"q": args.query}) + (f"&{args.params}" if args.params else "")
        dom = render(f"http://127.0.0.1:{port}/?" + address, args.out, size)
    finally:
        server.terminate()
        server.wait(timeout=30)
    cards = len(re.findall(r'class="card"', dom))
    print(f"{cards} result cards rendered; screenshot saved to {args.out}")
    return 0 if cards else 1


if __name__ == "__main__":
    sys.exit(main())
