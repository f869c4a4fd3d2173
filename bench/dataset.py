"""A benchmark table of any size that behaves like a CLIP photo catalogue.

    python -m bench.dataset --rows 1000000 --db bench/work/db-1m

Vectors: the bundled model's embeddings of `bases` generated images (40
colour+shape classes, every background and size), each repeated with a small
random perturbation, so the table has the clusters and near neighbours of real
embeddings rather than uniform noise. Columns `sel_50`, `sel_10`, `sel_1` and
`sel_0_1` are 1 on exactly 50%, 10%, 1% and 0.1% of rows (chosen at random,
independent of the vectors), else 0, so `--filter sel_1=1` has a known
selectivity. Rows go in through the loader's own insert path (`rows_table` and
`catalog.images.insert`, manifest-style Nullable(Int64) columns). The generator
lives in `clipsearch.service.shapes`.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from clipsearch.models.clip import ClipModel
from clipsearch.service.shapes import fill
from clipsearch.store.catalog import Catalog


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", type=Path, required=True, help="embedded database folder (must not exist)")
    args = parser.parse_args(argv)
    if args.db.exists():
        parser.error(f"{args.db} exists; give a new folder")
    start = time.perf_counter()
    with Catalog.open(args.db) as store:
        fill(store, ClipModel(), args.rows)
        store.owner_sql("OPTIMIZE TABLE images FINAL")
    print(f"{args.rows} rows in {args.db} in {time.perf_counter() - start:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
