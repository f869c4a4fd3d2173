"""What `images`' columns are: their types as a filter reads them, and the columns that are not metadata."""
from __future__ import annotations

import re

# The perceptual hash columns of sql/schema.sql, in the order clipsearch.images.hashes.Hashes holds them.
HASH_COLUMNS = ("phash", "colour_hash", "centre_phash", "chroma_hash", "centre_chroma_hash")
NUMERIC_TYPE = re.compile(r"^(U?Int\d+|Float\d+|Decimal)")
TIME_TYPE = re.compile(r"^(Date|DateTime)")
WORD_COLUMNS = ("words_name", "words_prefixes", "words_title", "words_meta", "words_ocr", "words_label")
# Every field's words at once: the expression of images' one text index (sql/schema.sql), which a query must
# spell exactly so for ClickHouse to use the index
WORDS_ANY = f"arrayConcat({', '.join(WORD_COLUMNS)})"
# vectors, hashes, token lists, upkeep, pictures
NOT_FILTERABLE = {"embedding", *HASH_COLUMNS, *WORD_COLUMNS, "words_version", "thumbnail"}
# Left out of search results: a result says which words matched (its `match`); ocr_engine stays a filter
# (and a video moment's thumbnail, served by the file route)
HIDDEN = ", ".join(("embedding", *HASH_COLUMNS, *WORD_COLUMNS, "words_version", "ocr_engine", "thumbnail"))


def base_type(ch_type: str) -> str:
    """`LowCardinality(Nullable(String))` -> `String`."""
    while True:
        inner = re.match(r"^(?:Nullable|LowCardinality)\((.*)\)$", ch_type)
        if not inner:
            return ch_type
        ch_type = inner.group(1)
