"""Every image has words: what a load, a manifest, a move, `label` and `clipsearch words` store in images.words_*.

Photos carry their words where phones, cameras, Lightroom and Windows put them (EXIF, IPTC, XMP), written
here byte for byte as those tools do."""
from __future__ import annotations

import io
import json
import os
import shutil
import struct

import pytest
from PIL import Image, PngImagePlugin

from clipsearch.errors import SourceError
from clipsearch.images.labels import label_table
from clipsearch.loader.load import load
from clipsearch.loader.paths import forget_missing
from clipsearch.loader.words import backfill_words, no_words
from clipsearch.store.catalog import Catalog
from clipsearch.store.connection import EmbeddedConnection

WORDS = "words_name, words_prefixes, words_title, words_meta, words_label, words_version"
XMP = ('<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
       '<rdf:Description xmlns:dc="http://purl.org/dc/elements/1.1/"><dc:title><rdf:Alt><rdf:li '
       'xml:lang="x-default">Miradouro &amp; Sunset</rdf:li></rdf:Alt></dc:title><dc:subject><rdf:Bag>'
       '<rdf:li>viewpoint</rdf:li><rdf:li>Tejo</rdf:li></rdf:Bag></dc:subject></rdf:Description></rdf:RDF>'
       '</x:xmpmeta>')


def _iptc_segment(records: list[tuple[int, bytes]]) -> bytes:
    """A JPEG APP13 segment as Photoshop writes IPTC: 8BIM resource 0x0404 holding 2:nn datasets."""
    data = b"".join(b"\x1c\x02" + bytes([tag]) + struct.pack(">H", len(v)) + v for tag, v in records)
    data += b"\x00" * (len(data) % 2)
    resource = b"8BIM" + struct.pack(">H", 0x0404) + b"\x00\x00" + struct.pack(">I", len(data)) + data
    payload = b"Photoshop 3.0\x00" + resource
    return b"\xff\xed" + struct.pack(">H", len(payload) + 2) + payload


def phone_photo(path, colour=(200, 30, 30), iptc: list[tuple[int, bytes]] | None = None, xmp: str | None = None):
    """A JPEG as a phone and a photo manager leave it: a caption, Windows keywords, a UserComment, IPTC."""
    exif = Image.Exif()
    exif[0x010E] = "Tram 28 in Alfama"
    exif[0x9C9E] = "tram;Lisboa".encode("utf-16-le") + b"\x00\x00"            # XPKeywords
    exif.get_ifd(0x8769)[0x9286] = b"ASCII\x00\x00\x00" + b"yellow streetcar"   # UserComment
    out = io.BytesIO()
    Image.new("RGB", (64, 48), colour).save(out, "JPEG", exif=exif, **({"xmp": xmp.encode()} if xmp else {}))
    data = out.getvalue()
    if iptc:
        data = data[:2] + _iptc_segment(iptc) + data[2:]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _words(store, where: str = "1") -> dict[str, dict]:
    rows = store.query(f"SELECT path, {WORDS} FROM images FINAL WHERE {where} ORDER BY path")
    return {os.path.basename(r.pop("path")): r for r in rows}


def test_a_phone_photo_in_a_trip_folder_has_its_names_and_its_metadatas_words(tmp_path, store, model):
    trip = tmp_path / "Pictures" / "Trips" / "lisbon-2019"
    phone_photo(trip / "IMG_2041.jpg", iptc=[(5, b"Elevador"), (25, b"azulejo"), (25, b"tiles"),
                                             (120, "Caf\u00e9 on the corner".encode())], xmp=XMP)
    png = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_itxt("XML:com.adobe.xmp", XMP)
    Image.new("RGB", (40, 40), (0, 90, 200)).save(png, "PNG", pnginfo=info)
    (trip / "screens").mkdir()
    (trip / "screens" / "mapLisbon2.png").write_bytes(png.getvalue())
    assert load(str(tmp_path), store, model, progress=False, workers=0).loaded == 2
    got = _words(store)
    photo = got["IMG_2041.jpg"]
    assert photo["words_name"] == ["pictures", "trips", "lisbon", "2019", "img", "2041"]
    assert {"im", "img", "20", "204", "2041", "li", "lisbo", "pi"} <= set(photo["words_prefixes"])
    assert photo["words_meta"] == ["tram", "28", "in", "alfama", "tram", "lisboa", "yellow", "streetcar",
                                   "elevador", "café", "on", "the", "corner", "azulejo", "tiles",
                                   "miradouro", "sunset", "viewpoint", "tejo"]
    assert (photo["words_title"], photo["words_label"], photo["words_version"]) == ([], [], 1)
    screen = got["mapLisbon2.png"]
    assert screen["words_name"] == ["trips", "lisbon", "2019", "screens", "map", "lisbon", "2"]
    assert screen["words_meta"] == ["miradouro", "sunset", "viewpoint", "tejo"]


def test_a_shop_manifest_gives_title_words_from_its_text_columns(tmp_path, store, model):
    folder = tmp_path / "shop"
    phone_photo(folder / "a.jpg", (250, 0, 0))
    phone_photo(folder / "b.jpg", (0, 250, 0))
    manifest = folder / "products.csv"
    manifest.write_text("path,title,sku,brand,price\n"
                        "a.jpg,Red Enamel Mug,MUG-001R,Acme,12.5\n"
                        "b.jpg,Green Teapot,TEA-77G,,30\n")
    assert load(str(manifest), store, model, progress=False, workers=0).loaded == 2
    got = _words(store)
    assert got["a.jpg"]["words_title"] == ["red", "enamel", "mug", "mug", "001", "r", "acme"]
    assert got["b.jpg"]["words_title"] == ["green", "teapot", "tea", "77", "g"]   # no price: a number column


def test_text_columns_choose_the_title_words_and_the_choice_holds_for_later_changes(tmp_path, store, model):
    folder = tmp_path / "shop"
    phone_photo(folder / "a.jpg", (250, 0, 0))
    phone_photo(folder / "b.jpg", (0, 250, 0))
    manifest = folder / "products.jsonl"
    manifest.write_text(json.dumps({"path": "a.jpg", "title": "Red Mug", "sku": 4711, "notes": "ships fast"}) + "\n")
    with pytest.raises(SourceError, match="'colour'"):
        load(str(manifest), store, model, progress=False, workers=0, text_columns=["title", "colour"])
    load(str(manifest), store, model, progress=False, workers=0, text_columns=["title", "sku"])
    assert _words(store)["a.jpg"]["words_title"] == ["red", "mug", "4711"]   # notes left out, the number in
    # the same file given a new title later: the words follow, by the same choice
    manifest.write_text(json.dumps({"path": "a.jpg", "title": "Crimson Mug", "sku": 4711, "notes": "x"}) + "\n"
                        + json.dumps({"path": "b.jpg", "title": "Teapot", "notes": "fragile"}) + "\n")
    summary = load(str(manifest), store, model, progress=False, workers=0)
    assert (summary.loaded, summary.attached) == (1, 1)
    got = _words(store)
    assert got["a.jpg"]["words_title"] == ["crimson", "mug", "4711"]
    assert got["b.jpg"]["words_title"] == ["teapot"]


def test_a_moved_file_is_found_by_its_new_name(tmp_path, store, model):
    inbox = tmp_path / "home" / "ana" / "inbox"
    old = phone_photo(inbox / "IMG_0001.jpg")
    shutil.copy(old, inbox / "porto-bridge.jpg")   # the same bytes under a second name
    load(str(inbox), store, model, progress=False, workers=0)
    assert store.query("SELECT count() AS n FROM images")[0]["n"] == 1
    shown = store.query("SELECT path FROM images")[0]["path"]
    os.remove(shown)
    forget_missing(store, str(inbox) + "/")
    row = store.query(f"SELECT path, {WORDS} FROM images FINAL")[0]
    assert row["path"] != shown
    kept = os.path.basename(row["path"])
    assert row["words_name"] == (["home", "ana", "inbox", "img", "0001"] if kept == "IMG_0001.jpg"
                                 else ["home", "ana", "inbox", "porto", "bridge"])
    assert set(row["words_prefixes"]) >= {w[:2] for w in row["words_name"]}


def test_labels_an_image_gets_are_its_label_words(tmp_path, store, model):
    from tests.conftest import random_specs, write_catalogue
    folder = write_catalogue(tmp_path / "imgs", random_specs(6, 3), 3, manifest=None)
    load(str(folder), store, model, progress=False, workers=0)
    label_table(store, model, ["red circle", "blue square"], name="shape")
    label_table(store, model, ["indoors", "outdoors"], name="where")
    rows = store.query("SELECT i.words_label AS words, groupArray(l.label) AS labels FROM images AS i FINAL "
                       "JOIN (SELECT * FROM labels FINAL ORDER BY label_set) AS l ON l.image_id = i.id "
                       "GROUP BY i.id, i.words_label")
    assert len(rows) == 6
    for r in rows:
        assert r["words"] == " ".join(r["labels"]).split()   # the set "shape" first, then "where"


def test_a_store_made_before_words_gets_them_from_clipsearch_words(tmp_path, cli, model):
    photo = phone_photo(tmp_path / "Pictures" / "Phone" / "lisbon-2019" / "IMG_2041.jpg", iptc=[(25, b"azulejo")])
    db = tmp_path / "db"
    with Catalog.open(db) as catalog:
        load(str(photo.parent), catalog, model, progress=False, workers=0)
        image_id = catalog.query("SELECT id FROM images")[0]["id"]
        catalog.images.add_columns({"title": "Nullable(String)"})
        catalog.images.set_metadata({image_id: {"title": "Tram stop"}})
        catalog.files.record({str(photo): catalog.files.under_paths([str(photo)])[str(photo)]._replace(
            metadata={"title": "Tram stop"})})
        # as migration 007 leaves a row loaded before it: no words, version 0
        catalog.images.update_columns([image_id], {c: ("Array(String)", [[]]) for c in
                                                   ("words_name", "words_prefixes", "words_title", "words_meta")}
                                      | {"words_version": ("UInt8", [0])})
        assert no_words(catalog) == 1
    noted = cli("sql", "SELECT count() FROM images", db=db)
    assert "`clipsearch words`" in noted.stderr
    done = cli("words", "--quiet", db=db)
    assert done.returncode == 0 and "gave 1 of 1 images" in done.stdout, done
    with Catalog.open(db) as catalog:
        row = catalog.query(f"SELECT {WORDS} FROM images FINAL")[0]
    assert row["words_name"] == ["pictures", "phone", "lisbon", "2019", "img", "2041"]
    assert row["words_title"] == ["tram", "stop"]
    assert row["words_meta"] == ["tram", "28", "in", "alfama", "tram", "lisboa", "yellow", "streetcar", "azulejo"]
    assert row["words_version"] == 1
    assert "`clipsearch words`" not in cli("sql", "SELECT 1", db=db).stderr
    assert "every image has its words" in cli("words", "--quiet", db=db).stdout


def test_migration_007_leaves_old_rows_for_clipsearch_words(tmp_path):
    connection = EmbeddedConnection(tmp_path / "db")
    connection.command(
        "CREATE TABLE images (id String, path String, width UInt32, height UInt32, format LowCardinality(String), "
        "file_size UInt64, taken_at Nullable(DateTime), camera String DEFAULT '', model LowCardinality(String), "
        "loaded_at DateTime64(3) DEFAULT now64(3), embedding Array(Float32) CODEC(NONE)) "
        "ENGINE = ReplacingMergeTree(loaded_at) ORDER BY id")
    connection.command("INSERT INTO images (id, path, width, height, format, file_size, model, embedding) "
                       "VALUES ('a1', '/gone/lisbon-2019/IMG_2041.png', 10, 20, 'PNG', 123, 'm', [1, 0])")
    connection.close()
    with Catalog.open(tmp_path / "db") as catalog:
        assert no_words(catalog) == 1
        summary = backfill_words(catalog, workers=0)
        assert (summary.read, summary.without_meta) == (1, 1)   # its file is gone: the name's words still
        assert catalog.query(f"SELECT {WORDS} FROM images")[0] == {
            "words_name": ["gone", "lisbon", "2019", "img", "2041"],
            "words_prefixes": ["20", "201", "2019", "204", "2041", "go", "gon", "gone", "im", "img", "li",
                               "lis", "lisb", "lisbo", "lisbon"],
            "words_title": [], "words_meta": [], "words_label": [], "words_version": 1}


def test_load_text_columns_from_the_command_line(tmp_path, cli):
    folder = tmp_path / "shop"
    phone_photo(folder / "mug.jpg")
    manifest = folder / "products.csv"
    manifest.write_text("path,title,sku,supplier\nmug.jpg,Enamel Mug,88123,Tin Works Ltd\n")
    db = tmp_path / "db"
    refused = cli("load", manifest, "--text-columns", "title,colour", "--quiet", db=db)
    assert refused.returncode != 0 and "'colour'" in refused.stderr
    assert cli("load", manifest, "--text-columns", "title, sku", "--quiet", db=db).returncode == 0
    with Catalog.open(db) as catalog:
        assert catalog.query("SELECT words_title FROM images")[0]["words_title"] == ["enamel", "mug", "88123"]


def test_the_next_load_of_a_folder_gives_its_old_rows_their_words(tmp_path, store, model):
    trip = tmp_path / "Pictures" / "Trips" / "porto-2018"
    phone_photo(trip / "DSC0001.jpg")
    load(str(trip), store, model, progress=False, workers=0)
    image_id = store.query("SELECT id FROM images")[0]["id"]
    store.images.update_columns([image_id], {"words_name": ("Array(String)", [[]]),
                                             "words_meta": ("Array(String)", [[]]),
                                             "words_version": ("UInt8", [0])})   # as loaded before words
    summary = load(str(trip), store, model, progress=False, workers=0)
    assert (summary.loaded, summary.already_present, summary.worded) == (0, 1, 1)
    assert "gave 1 images loaded before words their words" in summary.line()
    assert _words(store)["DSC0001.jpg"]["words_name"] == ["pictures", "trips", "porto", "2018", "dsc", "0001"]
    assert _words(store)["DSC0001.jpg"]["words_meta"][:4] == ["tram", "28", "in", "alfama"]
    assert load(str(trip), store, model, progress=False, workers=0).worded == 0
