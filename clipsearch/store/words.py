"""Words: the one way text becomes the tokens that are stored (images.words_*) and searched (the words signal).
Stored and query text go through the same function, so a word matches exactly when both spell it alike: case,
width, accents composed (NFKC), zero-width characters and punctuation do not count. A run of letters and
digits is split where its case changes and between letters and digits (`IMG_2041` -> img 2041, `lisbonTrip2019`
-> lisbon trip 2019); scripts written without spaces (Chinese, Japanese, Thai ...) give one token per character.
ClickHouse's text index then takes the arrays as they are (tokenizer 'array')."""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from pathlib import PurePath

MAX_WORD_CHARS = 40      # a longer run (a hash, base64) is cut: no one types it, and the index stays small
MAX_FIELD_WORDS = 2000   # the words kept per field and image (an OCR'd page of text is ~500)
MIN_PREFIX = 2           # partial matches of file and folder names start at two characters (`IMG_20`)
MAX_PREFIX = 20
NAME_FOLDERS = 3         # the folders named in a path whose words count: a/b/c/photo.jpg -> a b c photo
MAX_QUERY_WORDS = 32     # a longer query's words past these are ignored (its picture side is unaffected)

# Words too common to rank by: matching them says nothing about a picture.
STOP_WORDS = frozenset("""a an and are as at be by for from has have in is it its of on or that the this to was
were with photo photos image images picture pictures""".split())

_RUN = re.compile(r"[^\W_]+")   # letters and digits of any script
# Where a run splits: lower -> upper (trip|Lisbon), UPPER -> Upper+lower (HTTP|Server), letter <-> digit
_SPLIT = re.compile(r"(?<=[^\W\d_])(?=\d)|(?<=\d)(?=[^\W\d_])|(?<=[a-z])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")
# Scripts without spaces between words: each character is a token
_UNSPACED = re.compile("([\u0e00-\u0e7f\u0e80-\u0eff\u1000-\u109f\u1780-\u17ff\u2e80-\u2fdf\u3040-\u30ff"
                       "\u3100-\u312f\u31a0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002fa1f])")
# Zero-width and other format characters (category Cf): Unicode has them in planes 0, 1 and 14 only, and
# looking at those alone takes 11 ms at import instead of 160 ms for all 17 (a command's start)
_FORMAT = dict.fromkeys(i for plane in (0, 1, 14) for i in range(plane << 16, (plane + 1) << 16)
                        if unicodedata.category(chr(i)) == "Cf")


def words(text: str | None, limit: int = MAX_FIELD_WORDS) -> list[str]:
    """The tokens of `text` in order, lower case, repeats kept (a phrase is tokens next to each other)."""
    if not text:
        return []
    text = unicodedata.normalize("NFKC", str(text)).translate(_FORMAT)
    out: list[str] = []
    for run in _RUN.findall(_UNSPACED.sub(r" \1 ", text)):
        for part in _SPLIT.split(run):
            if part:
                out.append(part.casefold()[:MAX_WORD_CHARS])
                if len(out) >= limit:
                    return out
    return out


def field_words(texts: Iterable[object]) -> list[str]:
    """The tokens of several texts of one field (a row's title columns, a photo's captions and keywords), in
    order, capped at MAX_FIELD_WORDS; a value that is not text (a number) by its text, None skipped."""
    out: list[str] = []
    for text in texts:
        if text is not None and len(out) < MAX_FIELD_WORDS:
            out += words(str(text), MAX_FIELD_WORDS - len(out))
    return out


def name_words(path: str) -> list[str]:
    """The words of a file's name (without its extension) and of the NAME_FOLDERS folders around it."""
    pure = PurePath(path.replace("\\", "/"))
    folders = [part for part in pure.parent.parts if part not in ("/", "")][-NAME_FOLDERS:]
    return words(" ".join([*folders, pure.stem]))


def prefixes(tokens: list[str]) -> list[str]:
    """Every distinct prefix of 2 to MAX_PREFIX characters of `tokens` (whole short tokens included), for
    partial matches of names: `IMG_20` finds IMG_2041.jpg."""
    out = {token[:n] for token in tokens for n in range(MIN_PREFIX, min(len(token), MAX_PREFIX) + 1)}
    out.update(token for token in tokens if len(token) < MIN_PREFIX)
    return sorted(out)


def query_words(text: str) -> tuple[list[str], list[list[str]]]:
    """(the distinct words of a search text, stop words left out, at most MAX_QUERY_WORDS; its quoted
    phrases, each the tokens that must stand together)."""
    phrases = [tokens for quoted in re.findall(r'"([^"]*)"', text or "") if len(tokens := words(quoted)) > 1]
    seen: dict[str, None] = {}
    for token in words(text, limit=MAX_FIELD_WORDS):
        if token not in STOP_WORDS:
            seen.setdefault(token)
    return list(seen)[:MAX_QUERY_WORDS], phrases[:MAX_QUERY_WORDS]
