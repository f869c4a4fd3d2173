"""Shared fixtures and helpers: the bundled model, generated catalogues with known answers, embedded
stores, and the `clipsearch` command run in this process.

chdb opens one database folder per process at a time, so every store a fixture or helper opens is
closed before the next one opens. A module-scoped store stays open for its whole module; a module
that also runs the CLI in-process (which opens and closes its own store) keeps its store closed
between tests instead and opens it per test (about 40 ms).
"""
from __future__ import annotations

import contextlib
import http.server
import io
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest

from clipsearch.loader.load import LoadSummary, load
from clipsearch.models.clip import ClipModel
from clipsearch.service import shapes
from clipsearch.service.cli import main as cli_main
from clipsearch.service.shapes import write_catalogue
from clipsearch.store.catalog import Catalog

__all__ = ["ROOT", "CONSOLE_SCRIPT", "Result", "Loaded", "write_catalogue", "random_specs", "loaded", "environment",
           "run_cli"]

ROOT = Path(__file__).resolve().parent.parent
# The `clipsearch` console script the package installs, beside the interpreter running the tests.
CONSOLE_SCRIPT = shutil.which("clipsearch", path=str(Path(sys.executable).parent)) or shutil.which("clipsearch")


# -- tiers ------------------------------------------------------------------------------------------
# unit: neither the ClickHouse engine nor a model (seconds); `-m "not slow"`: with them, in this process;
# everything: processes, browsers and servers too. A test is a unit test when it asks for no fixture that
# makes a store or a model and its own code opens none; a `-m unit` run fails if the engine or torch was
# imported after all, so the tier stays honest.
STORE_FIXTURES = {"model", "store", "cli", "catalogue", "catalog", "loaded_db", "app", "client", "served",
                  "port", "indexed", "stores", "server_url", "page", "page_url", "photos", "db", "tables", "sessions"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.get_closest_marker("slow") or set(getattr(item, "fixturenames", ())) & STORE_FIXTURES:
            continue
        if not _opens_a_store(item):
            item.add_marker(pytest.mark.unit)


def _opens_a_store(item: pytest.Item) -> bool:
    """Whether the test's own code, or a helper of its module it calls, opens a store, a model or a process
    (the fixtures are checked apart)."""
    import inspect
    try:
        text = inspect.getsource(item.function)   # type: ignore[attr-defined]
        helpers = [getattr(item.module, name) for name in re.findall(r"\b(_\w+)\(", text)
                   if inspect.isfunction(getattr(item.module, name, None))]
        text += "".join(inspect.getsource(helper) for helper in helpers)
    except (AttributeError, OSError, TypeError):
        return True
    return any(word in text for word in ("Catalog", "clipsearch.open", "Connection", "run_cli", "create_app",
                                         "ClipModel", "subprocess", "chdb", "open_collection", "main("))


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if session.config.getoption("-m") == "unit" and {"chdb", "torch"} & set(sys.modules):
        session.exitstatus = 1
        print(f"\nunit tier: {sorted({'chdb', 'torch'} & set(sys.modules))} imported by a test marked unit",
              file=sys.stderr)


@pytest.fixture(scope="session")
def model() -> ClipModel:
    return ClipModel()


@pytest.fixture
def store(tmp_path):
    s = Catalog.open(tmp_path / "db")
    yield s
    s.close()


# -- catalogues ---------------------------------------------------------------------------------
def random_specs(n: int, seed: int, **kwargs) -> list[shapes.ShapeSpec]:
    """`n` random image specs from one seeded generator (`kwargs` go to `random_spec`: colour, shape, ...)."""
    rng = np.random.default_rng(seed)
    return [shapes.random_spec(rng, **kwargs) for _ in range(n)]


@dataclass
class Loaded:
    """A generated catalogue loaded into the embedded store `folder`/db; close the store when done
    (or use it in a `with`, which closes it)."""
    store: Catalog
    source: Path            # the manifest that was loaded (the image folder when there is none)
    summary: LoadSummary
    folder: Path

    @property
    def db(self) -> Path:
        return self.folder / "db"

    def close(self) -> None:
        self.store.close()

    def __enter__(self) -> Loaded:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def loaded(folder: Path, specs: list[shapes.ShapeSpec], seed: int, model: ClipModel, *,
           extra: Callable[[int], dict] | None = None, manifest: str | None = "manifest.csv",
           images: str = "images") -> Loaded:
    """Generate, store, load: render `specs` (pixels drawn from `seed`) into `folder`/`images` with a
    manifest (+ `extra(i)` columns), open the embedded store `folder`/db and load the catalogue into it."""
    source = write_catalogue(folder / images, specs, seed, manifest, extra)
    store = Catalog.open(folder / "db")
    try:
        summary = load(str(source), store, model, progress=False)
    except BaseException:
        store.close()
        raise
    return Loaded(store, source, summary, folder)


# -- the command line ---------------------------------------------------------------------------
class Result(NamedTuple):
    """What a run of the command gave: the attributes of subprocess.CompletedProcess that tests read."""
    returncode: int
    stdout: str
    stderr: str
    stdout_bytes: bytes = b""   # stdout as written, for the binary formats of `clipsearch sql --format`


@contextlib.contextmanager
def environment(changes: Mapping[str, str | None]) -> Iterator[None]:
    """Set (or, for None, remove) environment variables for the block; restore them after."""
    saved = {name: os.environ.get(name) for name in changes}
    try:
        _set_environment(changes)
        yield
    finally:
        _set_environment(saved)


def _set_environment(values: Mapping[str, str | None]) -> None:
    for name, value in values.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@contextlib.contextmanager
def working_directory(path: Path) -> Iterator[None]:
    before = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="session")
def cli(model) -> Callable[..., Result]:
    """`cli(*args, db=None, env=None)`: run one `clipsearch` command in this process, with the session's
    model, and return its exit code and output.

    As a user would run it from the repository root: relative paths resolve there, `env` is set for the
    command only, and an explicit `db` beats a CLICKHOUSE_URL in the environment. The command opens and
    closes its own store, so no other embedded store may be open in this process while it runs.
    """
    def run(*args: object, db: str | os.PathLike | None = None, env: Mapping[str, str] | None = None) -> Result:
        argv = [str(a) for a in args] + (["--db", str(db)] if db else [])
        changes: dict[str, str | None] = dict(env or {})
        if db:
            changes["CLICKHOUSE_URL"] = None
        out, err = io.TextIOWrapper(io.BytesIO(), encoding="utf-8"), io.StringIO()   # stdout has a byte buffer
        with environment(changes), working_directory(ROOT), \
                contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli_main(argv, model=model)
            except SystemExit as exc:  # argparse's usage errors (2) and --help (0), as the process would exit
                if isinstance(exc.code, int) or exc.code is None:
                    code = exc.code or 0
                else:
                    print(exc.code, file=sys.stderr)
                    code = 1
        out.flush()
        written = out.buffer.getvalue()
        return Result(code, written.decode("utf-8", "replace"), err.getvalue(), written)
    return run


def run_cli(*args: object, db: str | os.PathLike | None = None, env: Mapping[str, str] | None = None,
            command: list[str] | None = None, timeout: float = 300, **kwargs) -> subprocess.CompletedProcess:
    """Run the real `clipsearch` command in its own process (default `python -m clipsearch.service.cli`;
    `command` names another entry point, e.g. [CONSOLE_SCRIPT]). Only for tests about the process itself:
    locks held by another process, signals, the installed script's exit codes."""
    full_env = {**os.environ, **(env or {})}
    if db:  # an explicit embedded folder: a CLICKHOUSE_URL in the environment must not win
        full_env.pop("CLICKHOUSE_URL", None)
    cmd = (command or [sys.executable, "-m", "clipsearch.service.cli"]) + [str(a) for a in args] + \
        (["--db", str(db)] if db else [])
    return subprocess.run(cmd, capture_output=True, text=True, env=full_env, cwd=ROOT, timeout=timeout, **kwargs)


def granularity(store, table: str) -> int:
    """The table's index_granularity (rows per granule), as made."""
    settings = store.query("SELECT engine_full FROM system.tables "
                           "WHERE database = currentDatabase() AND name = {t:String}", {"t": table})[0]["engine_full"]
    found = re.search(r"index_granularity = (\d+)", settings)
    return int(found.group(1)) if found else 8192


@pytest.fixture
def listener():
    """A loopback HTTP server that records every request it gets (none must come)."""
    got: list[str] = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802
            got.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"secret_header\n1\n")

        do_HEAD = do_POST = do_GET  # noqa: N815

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", got
    server.shutdown()


# -- servers started by tests ---------------------------------------------------------------------
def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_serve(db: Path, web_port: int, sql_port: int, env: Mapping[str, str], **popen) -> subprocess.Popen:
    """`clipsearch serve` on `db` in a process of its own, returned once its /healthz answers 200;
    AssertionError if it has not within 90 s or it exits first."""
    import urllib.request
    proc = subprocess.Popen([sys.executable, "-m", "clipsearch.service.cli", "serve", "--db", str(db), "--port",
                             str(web_port), "--sql-port", str(sql_port)], env=dict(env), **popen)

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError("serve did not start")
        try:
            return urllib.request.urlopen(f"http://127.0.0.1:{web_port}/healthz").status == 200
        except OSError:
            return False
    wait_until(up)
    return proc


def wait_until(predicate: Callable[[], object], timeout: float = 90.0) -> None:
    """Poll `predicate` every 0.2 s until it is true; AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.2)
