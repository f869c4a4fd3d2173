#!/usr/bin/env python3
"""ClickHouse executable UDF: one text per input row -> its CLIP embedding as Array(Float32).

Run by the server as an `executable_pool` function (clip_text_embedding_function.xml), so
the model loads once per pooled process. Protocol: TabSeparated in and out, one row per
line; each answer is flushed at once because the server waits for exactly one output row
per input row. The model is the store's: the one recorded for `images.model`, read
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


def main() -> int:
    model = StoreModel()
    for line in sys.stdin:
        text = unescape(line.rstrip("\n"))
        current = model()
        vector = current.encode_texts([text])[0] if text.strip() else [0.0] * current.dim
        sys.stdout.write("[" + ",".join(f"{float(x):.7g}" for x in vector) + "]\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
