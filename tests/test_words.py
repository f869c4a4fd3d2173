"""The one tokenizer (clipsearch/store/words.py): what a stored name, title or caption and a typed query become."""
from __future__ import annotations

from clipsearch.store.words import (
    MAX_FIELD_WORDS,
    MAX_PREFIX,
    MAX_QUERY_WORDS,
    MAX_WORD_CHARS,
    name_words,
    prefixes,
    query_words,
    words,
)


def test_camera_and_folder_names_split_at_case_changes_and_digits():
    assert words("IMG_2041") == ["img", "2041"]
    assert words("lisbonTrip2019") == ["lisbon", "trip", "2019"]
    assert words("HTTPServer-v2.final") == ["http", "server", "v", "2", "final"]
    assert words("DSC00123 (copy)") == ["dsc", "00123", "copy"]


def test_full_width_and_composed_letters_match_their_ordinary_spelling():
    assert words("ＩＭＧ＿２０４１") == words("IMG_2041") == ["img", "2041"]
    assert words("Cafe\u0301 São") == words("Café SÃO") == ["café", "são"]
    assert words("STRASSE Straße") == ["strasse", "strasse"]   # casefold, as a German search expects


def test_zero_width_characters_do_not_split_or_hide_a_word():
    assert words("lis\u200bbon\u200d \ufeffharbour") == ["lisbon", "harbour"]


def test_chinese_and_japanese_give_one_token_per_character_beside_latin_words():
    assert words("上海外滩 night") == ["上", "海", "外", "滩", "night"]
    assert words("東京タワー2020") == ["東", "京", "タ", "ワ", "ー", "2020"]


def test_arabic_and_hebrew_words_stay_whole():
    assert words("سوق الجمعة") == ["سوق", "الجمعة"]
    assert words("שוק הכרמל") == ["שוק", "הכרמל"]


def test_punctuation_and_empty_text_give_no_words():
    assert words("!!! --- ... ???") == []
    assert words("") == words(None) == []
    assert query_words("?!, ...") == ([], [])


def test_a_long_text_is_capped_and_a_long_run_cut():
    text = " ".join(f"word{i}" for i in range(10_000))
    out = words(text)
    assert len(out) == MAX_FIELD_WORDS and out[:4] == ["word", "0", "word", "1"]
    assert words("a" * 500) == ["a" * MAX_WORD_CHARS]


def test_name_words_of_a_deep_path_keep_the_last_three_folders_and_the_name_without_extension():
    path = "/home/ana/Pictures/Trips/lisbon-2019/day2/IMG_2041.JPG"
    assert name_words(path) == ["trips", "lisbon", "2019", "day", "2", "img", "2041"]
    assert name_words(r"C:\Users\ana\lisbon-2019\IMG_2041.jpg")[-4:] == ["lisbon", "2019", "img", "2041"]
    assert name_words("/photo.tar.gz") == ["photo", "tar"]


def test_prefixes_find_a_name_by_its_start():
    out = prefixes(["img", "2041", "x"])
    assert out == sorted(out) and len(out) == len(set(out))
    assert {"im", "img", "20", "204", "2041", "x"} <= set(out)
    assert "i" not in out and "2" not in out
    long = prefixes(["a" * 30])
    assert max(map(len, long)) == MAX_PREFIX and min(map(len, long)) == 2


def test_query_words_drop_stop_words_and_repeats_and_keep_quoted_phrases():
    assert query_words('a photo of the "red car" at Lisbon, red') == (["red", "car", "lisbon"], [["red", "car"]])
    assert query_words("the a of") == ([], [])
    assert query_words('"IMG" 2041') == (["img", "2041"], [])   # a one-word quote is no phrase
    many, _ = query_words(" ".join(f"w{i}x" for i in range(10_000)))
    assert len(many) == MAX_QUERY_WORDS


def test_the_format_characters_dropped_are_all_of_unicodes():
    """words() drops format characters (zero-width joiners, BOM, tags); the table is built from the planes
    that hold them, which must be all of them in this Python's Unicode."""
    import unicodedata

    from clipsearch.store.words import _FORMAT
    assert set(_FORMAT) == {i for i in range(0x110000) if unicodedata.category(chr(i)) == "Cf"}
