"""Write the compose Grafana dashboard from the same definition the page's Dashboard tab draws:
sql/dashboard.json and the sql/queries files it names (one source of truth; a test checks that the
committed dashboard is what this writes).

    python -m scripts.grafana_dashboard [--out docker/grafana/dashboards/clipsearch.json]
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from clipsearch.sql import dashboard, read

OUT = Path(__file__).resolve().parent.parent / "docker" / "grafana" / "dashboards" / "clipsearch.json"
DATASOURCE = {"type": "grafana-clickhouse-datasource", "uid": "clickhouse"}
TIME_SERIES, TABLE = 0, 1   # the ClickHouse data source's result formats


def panel(number: int, definition: dict) -> dict:
    """One Grafana panel: a time series for an hourly chart, else a bar chart of the query's rows."""
    hourly = definition["chart"] == "hourly"
    sql = read(f"queries/{definition['file']}").strip().rstrip(";")  # the file as it is
    return {"id": number, "type": "timeseries" if hourly else "barchart", "title": definition["title"],
            "description": f"sql/queries/{definition['file']}",
            "gridPos": {"x": 12 * ((number - 1) % 2), "y": 8 * ((number - 1) // 2), "w": 12, "h": 8},
            "datasource": DATASOURCE,
            "options": {} if hourly else {"orientation": "horizontal" if definition["chart"] == "hbar" else "vertical",
                                          "xField": definition["x"]},
            "targets": [{"datasource": DATASOURCE, "editorType": "sql", "queryType": "sql", "refId": "A",
                         "format": TIME_SERIES if hourly else TABLE, "rawSql": sql}]}


def build() -> dict:
    return {"uid": "clipsearch", "title": "clipsearch", "tags": ["clipsearch"], "schemaVersion": 39, "version": 1,
            "refresh": "1m", "time": {"from": "now-7d", "to": "now"},
            "description": "Written by scripts/grafana_dashboard.py from sql/dashboard.json: the same panels as "
                           "the page's Dashboard tab",
            "panels": [panel(n, d) for n, d in enumerate(dashboard(), 1)]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    args.out.write_text(json.dumps(build(), indent=2) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
