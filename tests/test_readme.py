"""Every command of the README's "Using it" block, as written, on the demo catalogue: each one answers
(exit 0, and a search finds something)."""
from __future__ import annotations

import json
import re
import shlex

import pytest

from clipsearch.service.shapes import make_catalogue
from tests.conftest import ROOT

pytestmark = pytest.mark.slow


def readme_commands() -> list[list[str]]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"## Using it\n+```bash\n(.*?)```", text, re.S).group(1)
    return [shlex.split(line, comments=True)[1:] for line in block.splitlines() if line.startswith("clipsearch ")]


def test_every_using_it_command_answers_on_the_demo(cli, tmp_path):
    manifest = make_catalogue(tmp_path / "demo-catalogue", 300)
    images = manifest.parent / "images"
    image = sorted(images.iterdir())[0]
    db = tmp_path / "db"
    commands = readme_commands()
    assert len(commands) >= 15 and commands[-1][0] == "serve"
    stored_id = None
    for argv in commands[:-1]:   # serve: tests/test_served_folder.py and the page tests
        if stored_id is None and argv[0] == "search":
            found = cli("search", "a circle", "--json", db=db)
            stored_id = json.loads(found.stdout)[0]["id"][:12]
        swap = {"~/photos": str(images), "products.csv": str(manifest), "query.jpg": str(image),
                "q.jpg": str(image), "ref.jpg:0.5": f"{image}:0.5", "3f2a9c01b2d4": stored_id}
        args = [swap.get(a, a) for a in argv]
        into = None
        if ">" in args:   # the shell's redirection: the output's bytes into that file
            into, args = tmp_path / args[args.index(">") + 1], args[:args.index(">")]
        # `load ~/photos` and `load products.csv` are alternatives ("or"): the folder goes to a store of its own
        result = cli(*args, db=tmp_path / "folder-db" if argv[1:] == ["~/photos"] else db)
        assert result.returncode == 0, (argv, result.stderr)
        if into is not None and into.suffix == ".parquet":
            import pyarrow.parquet as pq
            into.write_bytes(result.stdout_bytes)
            assert pq.read_table(into).num_rows == 300
            continue
        assert result.stdout.strip() and "no results" not in result.stdout, (argv, result.stdout)
        if argv[0] == "search" and "--json" not in argv:
            assert re.search(r"^\s+1\s+0\.\d{3}\s", result.stdout, re.M), (argv, result.stdout)
