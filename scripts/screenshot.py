"""Screenshot the search page in headless Chromium, with a search run.

    python scripts/screenshot.py [--db ./clipsearch-data] [--query "a red circle"] [--out docs/screenshot.png]

Starts `clipsearch serve` on a free loopback port, loads /?q=QUERY (the page
runs the search on load), saves the PNG and prints how many result cards
the page rendered. Needs Debian's `chromium` package.
"""
from __future__ import annotations

import argparse
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--db")
    parser.add_argument("--query", default="a red circle")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "screenshot.png")
    args = parser.parse_args(argv)
    port = free_port()
    server = start_server(args.db, port)
    try:
        dom = render(f"http://127.0.0.1:{port}/?" + urllib.parse.urlencode({"q": args.query}), args.out)
    finally:
        server.terminate()
        server.wait(timeout=30)
    cards = len(re.findall(r'class="card"', dom))
    print(f"{cards} result cards rendered; screenshot saved to {args.out}")
    return 0 if cards else 1


if __name__ == "__main__":
    sys.exit(main())
