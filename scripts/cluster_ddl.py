"""Write the cluster DDL (sql/cluster/images_cluster.sql) from sql/schema.sql and sql/migrations/: each
sharded table's columns as the schema has them, on a replicated engine, behind a Distributed table; and
each migration's statements for clusters made by earlier releases. One source of truth: a test checks
that the committed file is what this writes.

    python -m scripts.cluster_ddl [--out sql/cluster/images_cluster.sql]
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

from clipsearch.sql import read
from clipsearch.store.connection import sql_statements
from clipsearch.store.schema import migrations

OUT = Path(__file__).resolve().parent.parent / "sql" / "cluster" / "images_cluster.sql"
# The tables spread over the shards, and by what: every copy of a file (and every version of a path) on one
# shard, so ReplacingMergeTree still collapses duplicates there; log rows anywhere.
SHARDED = {"images": "sipHash64(id)", "files": "sipHash64(path)", "load_errors": "rand()", "search_log": "rand()"}
HEADER = """-- Scale-out: `images` sharded and replicated across a ClickHouse cluster.
-- Written by `python -m scripts.cluster_ddl` from sql/schema.sql and sql/migrations/: edit those, not this.
-- Run once against any node, e.g.
--   clickhouse-client --queries-file sql/cluster/images_cluster.sql
-- `clipsearch` cluster is defined in the servers' remote_servers config (see
-- docker/clickhouse/cluster.xml); {shard} and {replica} are per-node macros.
-- Writers and readers use `images`, the Distributed table: the loader's INSERTs
-- are spread over shards by id, and a search runs on every shard in parallel
-- (each returns its own top k, the initiator merges them). The other tables of
-- the schema (labels, vector_index_tuning, schema_version) stay on the node
-- clipsearch connects to.
"""
FOOTER = """-- Rows loaded before the perceptual hashes keep NULL hashes and take no part in finding copies:
-- `clipsearch hashes` updates rows in place (ALTER TABLE ... UPDATE), which a Distributed table does not take.
-- Manifest columns go on both tables, local first:
--   ALTER TABLE images_local ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS price Nullable(Float64);
--   ALTER TABLE images ON CLUSTER clipsearch ADD COLUMN IF NOT EXISTS price Nullable(Float64);
"""


def _local(table: str, create: str) -> str:
    """The schema's CREATE TABLE as the shard-local, replicated table."""
    path = f"'/clickhouse/tables/{{shard}}/clipsearch/{table}_local', '{{replica}}'"
    create = create.replace(f"CREATE TABLE IF NOT EXISTS {table}\n",
                            f"CREATE TABLE IF NOT EXISTS {table}_local ON CLUSTER clipsearch\n", 1)
    create = re.sub(r"ENGINE = ReplacingMergeTree\((\w+)\)", rf"ENGINE = ReplicatedReplacingMergeTree({path}, \1)",
                    create)
    return re.sub(r"ENGINE = MergeTree\b", f"ENGINE = ReplicatedMergeTree({path})", create)


def build() -> str:
    creates = {m.group(1): s for s in sql_statements(read("schema.sql"))
               if (m := re.match(r"CREATE TABLE IF NOT EXISTS (\w+)\n", s))}
    parts = [HEADER]
    for table, key in SHARDED.items():
        parts.append(_local(table, creates[table]) + ";\n")
        parts.append(f"CREATE TABLE IF NOT EXISTS {table} ON CLUSTER clipsearch AS {table}_local\n"
                     f"ENGINE = Distributed(clipsearch, currentDatabase(), {table}_local, {key});\n")
    lines = ["-- Clusters made by earlier releases: each migration's statements on both tables, local first (an index:"
             "-- on the shards' tables only)."]
    for _, name in migrations():
        lines.append(f"-- {name}:")
        for statement in sql_statements(read(f"migrations/{name}")):
            match = re.match(r"ALTER TABLE (\w+) (.*)$", " ".join(statement.split()), re.S)
            if match and match.group(1) in SHARDED:
                # an index is the shards' own: a Distributed table has none
                both = not match.group(2).startswith(("ADD INDEX", "MATERIALIZE INDEX"))
                for table in (f"{match.group(1)}_local", match.group(1)) if both else (f"{match.group(1)}_local",):
                    lines.append(f"--   ALTER TABLE {table} ON CLUSTER clipsearch {match.group(2)};")
            elif statement.lstrip().startswith("INSERT INTO"):   # data: once, through the Distributed table
                lines.append(f"--   {' '.join(statement.split())};")
    parts.append("\n".join(lines) + "\n" + FOOTER)
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.write_text(build())
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
