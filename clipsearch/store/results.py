"""Query results streamed from the embedded engine, block by block, so that no result is held whole.

chdb's streaming query encodes each block of the result on its own: for row formats without a header the
blocks concatenate into one valid result; a `...WithNames` / `...WithNamesAndTypes` format repeats its
header lines at the start of every block, which `one_header` removes. Formats with a document around the
rows (JSON, Pretty, Parquet, ...) cannot be streamed this way and are not in STREAMING_FORMATS.
"""
from __future__ import annotations

from collections.abc import Iterable, Iterator

ROW_FORMATS = {"TabSeparated", "TSV", "TabSeparatedRaw", "TSVRaw", "CSV", "JSONEachRow", "JSONLines", "NDJSON",
               "JSONCompactEachRow", "JSONStringsEachRow", "JSONCompactStringsEachRow", "Native", "RowBinary",
               "Values", "LineAsString", "RawBLOB"}
HEADED_BASES = ("TabSeparated", "TSV", "CSV", "JSONCompactEachRow", "JSONCompactStringsEachRow")
STREAMING_FORMATS = ROW_FORMATS | {f"{base}{suffix}" for base in HEADED_BASES
                                   for suffix in ("WithNames", "WithNamesAndTypes")}


def header_records(fmt: str) -> int:
    """How many header lines a format writes before its rows: 0, 1 (names) or 2 (names and types)."""
    return 2 if fmt.endswith("WithNamesAndTypes") else 1 if fmt.endswith("WithNames") else 0


def _header_end(data: bytes, records: int, csv: bool) -> int:
    """Where `records` header records end in `data`. A CSV name is quoted and may hold a newline; the other
    formats escape newlines, so a record is a line."""
    end, quoted = 0, False
    for _ in range(records):
        while end < len(data):
            byte = data[end]
            end += 1
            if csv and byte == 0x22:   # '"': a doubled quote toggles twice
                quoted = not quoted
            elif byte == 0x0A and not quoted:
                break
    return end


def one_header(blocks: Iterable[bytes], fmt: str) -> Iterator[bytes]:
    """The blocks of a streamed result as one result: a repeated header is written once."""
    records = header_records(fmt)
    header: bytes | None = None
    for block in blocks:
        if records:
            if header is None:
                header = block[:_header_end(block, records, fmt.startswith("CSV"))]
            elif block.startswith(header):
                block = block[len(header):]
        if block:
            yield block
