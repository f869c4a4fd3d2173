#!/usr/bin/env python3
"""ClickHouse executable UDF: one text per input row -> its CLIP embedding as Array(Float32).

Run by the server as the `executable_pool` function `clipsearch_text_embedding`
(clip_text_embedding_function.xml), so the model loads once per pooled process; analysts
call the SQL function clipTextEmbedding(text) over it, which adds the query's start and time
limit. Protocol: TabSeparated in and out, one row per line (text, started_us, limit_s; a
line of the text alone, from an older config, has no limit); each answer is flushed at once
because the server waits for exactly one output row per input row.

The server checks max_execution_time between blocks only, and a block of texts is embedded
here row by row, so the script checks the query's limit before every row: past it, it writes
one line to stderr and exits non-zero, which fails the query with that line
(`stderr_reaction` throw). Anything else the process would write to stderr (a library's
warning) goes nowhere, so it cannot fail a query; a failure to embed is one line too, never
a traceback with the server's paths. The model is the store's: the one recorded for `images.model`, read
through CLICKHOUSE_URL when the server's environment has it (so a `clipsearch reembed`
switch is followed within CHECK_S seconds), else the one clipsearch is configured with
(CLIPSEARCH_MODEL / CLIPSEARCH_PRETRAINED, default the bundled model).
"""
import sys
from typing import Any

ESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "0": "\0", "'": "'", "b": "\b", "f": "\f"}


def unescape(field: str) -> str:
    """Undo TabSeparated escaping (\\t, \\n, \\\\ ...)."""
    out, chars = [], iter(field)
    for ch in chars:
        out.append(ESCAPES.get(next(chars, ""), "") if ch == "\\" else ch)
    return "".join(out)


CHECK_S = 2.0   # how often the store's model is read again (a `clipsearch reembed` switch is seen within it)


class StoreModel:
    """The model of the store's vectors: the one recorded in its `models` table for `images.model`, read
    through CLICKHOUSE_URL at most every CHECK_S seconds, so a switch by `clipsearch reembed` is followed;
    without CLICKHOUSE_URL (or before anything is loaded), the configured model."""

    def __init__(self) -> None:
        from clipsearch.models.factory import ModelRef
        from clipsearch.settings import Settings
        self.settings = Settings.load()
        self.ref: ModelRef | None = None
        self.checked = float("-inf")

    def __call__(self) -> Any:
        import time

        from clipsearch.models.factory import ModelRef
        if self.ref is None or time.monotonic() - self.checked > CHECK_S:
            self.checked = time.monotonic()
            ref = ModelRef(*(self.recorded() or (self.settings.model, self.settings.pretrained)))
            if self.ref is None or ref.label != self.ref.label:
                self.ref = ref   # the previous model is let go
        return self.ref.get()

    def recorded(self) -> tuple[str | None, str | None] | None:
        """(name, pretrained) recorded for the store's model, or None."""
        if not self.settings.clickhouse_url:
            return None
        try:
            import clickhouse_connect
            client = clickhouse_connect.get_client(dsn=self.settings.clickhouse_url)
            try:
                rows = client.query("SELECT name, pretrained FROM models FINAL "
                                    "WHERE label = (SELECT model FROM images LIMIT 1)").result_rows
            finally:
                client.close()
        except Exception:   # the store unreachable or not made yet: keep the model in use
            return None
        return (rows[0][0] or None, rows[0][1] or None) if rows else None


def deadline(started_us: str, limit_s: str) -> tuple[float, float]:
    """(the query's limit in seconds, 0 for none; the time.time() past which the row is refused)."""
    limit = float(limit_s or 0)
    return limit, int(started_us or 0) / 1e6 + limit


def fail(message: str) -> int:
    """Tell the server why (its stderr_reaction throw makes this line the query's error) and stop."""
    REPORT.write(message + "\n")
    REPORT.flush()
    return 1


REPORT = sys.stderr   # where the one-line refusals go; main() points the process's own stderr elsewhere


def main() -> int:
    global REPORT
    import os
    import time
    # The server fails a query on any stderr (throw): a library's warning must not, so fd 2 goes to
    # /dev/null and only this script's own refusals reach the server, through a copy of the real one.
    REPORT = os.fdopen(os.dup(2), "w")
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, 2)
    os.close(null)
    try:
        from clipsearch.models.model import MAX_QUERY_CHARS
        model = StoreModel()
    except Exception as exc:
        return fail(f"clipTextEmbedding could not load its model ({type(exc).__name__})")
    for line in sys.stdin:
        fields = line.rstrip("\n").split("\t")   # a tab inside a text arrives escaped
        try:
            limit, until = deadline(*fields[1:3]) if len(fields) >= 3 else (0.0, 0.0)
        except ValueError:
            return fail("clipTextEmbedding: a row without a readable start and time limit")
        if limit > 0 and time.time() > until:
            return fail(f"Timeout exceeded: clipTextEmbedding ran past the query's time limit "
                        f"(max_execution_time {limit:g} s)")
        text = unescape(fields[0])[:MAX_QUERY_CHARS]   # CLIP reads 77 tokens: more only costs time
        try:
            current = model()
            vector = current.encode_texts([text])[0] if text.strip() else [0.0] * current.dim
        except Exception as exc:   # its type, not its message (which may hold the server's paths)
            return fail(f"clipTextEmbedding could not embed the text ({type(exc).__name__})")
        sys.stdout.write("[" + ",".join(f"{float(x):.7g}" for x in vector) + "]\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
