#!/usr/bin/env python3
"""ClickHouse executable UDF: one text per input row -> its CLIP embedding as Array(Float32).

Run by the server as an `executable_pool` function (clip_text_embedding_function.xml), so
the model loads once per pooled process. Protocol: TabSeparated in and out, one row per
line; each answer is flushed at once because the server waits for exactly one output row
per input row. The model is the one clipsearch is configured with (CLIPSEARCH_MODEL /
CLIPSEARCH_PRETRAINED, default the bundled model), and must be the one the table was
loaded with.
"""
import sys

ESCAPES = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r", "0": "\0", "'": "'", "b": "\b", "f": "\f"}


def unescape(field: str) -> str:
    """Undo TabSeparated escaping (\\t, \\n, \\\\ ...)."""
    out, chars = [], iter(field)
    for ch in chars:
        out.append(ESCAPES.get(next(chars, ""), "") if ch == "\\" else ch)
    return "".join(out)


def main() -> int:
    from clipsearch.model import create_model
    from clipsearch.settings import Settings
    settings = Settings.load()
    model = create_model(settings.model, settings.pretrained)   # the one factory, as every command uses
    for line in sys.stdin:
        text = unescape(line.rstrip("\n"))
        vector = model.encode_texts([text])[0] if text.strip() else [0.0] * model.dim
        sys.stdout.write("[" + ",".join(f"{float(x):.7g}" for x in vector) + "]\n")
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
