"""Pixels as a person sees them, from what real photo libraries hold: phone photos stored sideways with an
orientation tag, 16-bit scans and float TIFFs, transparent logos, a stripe of 1x20000 pixels, dates from
1899 and 9999, a file swapped for a pipe while the loader reads the folder, and a store loaded by a release
that knew none of this."""
from __future__ import annotations

import io
import os
import resource
import sys
import threading
from pathlib import Path

import matplotlib
import numpy as np
import pytest
from PIL import Image

from clipsearch.collection import open as open_collection
from clipsearch.images.decode import decode, fit_for_model, open_image, orientation, read_image
from clipsearch.images.files import MAX_FILE_BYTES
from clipsearch.images.hashes import HASH_COLUMNS, distance, file_hashes, image_hashes
from clipsearch.loader import load as loader
from clipsearch.service.app import create_app
from clipsearch.settings import Settings
from clipsearch.store.catalog import Catalog

SAMPLES = Path(matplotlib.get_data_path()) / "sample_data"
ORIENTATION = 0x0112
# The stored pixels of a picture shown upright by orientation tag N: what a camera writes (the inverse turn).
STORED = {2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180, 4: Image.Transpose.FLIP_TOP_BOTTOM,
          5: Image.Transpose.TRANSPOSE, 6: Image.Transpose.ROTATE_90, 7: Image.Transpose.TRANSVERSE,
          8: Image.Transpose.ROTATE_270}


def _photo() -> Image.Image:
    """A real photograph, upright: 512 wide, 600 high."""
    return Image.open(SAMPLES / "grace_hopper.jpg").convert("RGB")


def _tagged(image: Image.Image, tag: int, fmt: str = "JPEG") -> bytes:
    """`image` stored as a camera stores it with orientation `tag`: the pixels turned, the tag saying how back."""
    exif = Image.Exif()
    exif[ORIENTATION] = tag
    out = io.BytesIO()
    image.transpose(STORED[tag]).save(out, fmt, exif=exif, **_quality(fmt))
    return out.getvalue()


def _encoded(image: Image.Image, fmt: str = "JPEG") -> bytes:
    out = io.BytesIO()
    image.save(out, fmt, **_quality(fmt))
    return out.getvalue()


def _quality(fmt: str) -> dict:
    return {"JPEG": {"quality": 95}, "WEBP": {"lossless": True}}.get(fmt, {})


# -- orientation ------------------------------------------------------------------------------------
@pytest.mark.parametrize("tag", sorted(STORED))
def test_every_orientation_tag_decodes_to_the_upright_picture(tag):
    upright = _photo()
    for fmt in ("PNG", "WEBP", "TIFF"):   # lossless: exactly the upright pixels (TIFF: Pillow's own turn)
        data = _tagged(upright, tag, fmt)
        image = read_image(io.BytesIO(data))
        assert orientation(image) == tag
        assert np.array_equal(np.asarray(decode(image)), np.asarray(upright)), (fmt, tag)
    # a phone's JPEG, decoded at reduced scale (draft first, then turned): the upright picture's shape
    small = decode(read_image(io.BytesIO(_tagged(upright, tag))), 64)
    assert small.size == decode(read_image(io.BytesIO(_encoded(upright))), 64).size == (64, 75)


def test_the_hashes_of_a_phone_photo_are_those_of_the_upright_picture():
    upright = _photo()
    tagged, plain = file_hashes(_tagged(upright, 6)), file_hashes(_encoded(upright))
    assert tagged is not None and plain is not None
    assert all(distance(a, b) <= 2 for a, b in zip(tagged, plain, strict=True)), (tagged, plain)
    sideways = image_hashes(upright.transpose(STORED[6]))   # what was stored before: far from the upright
    assert distance(sideways.phash, plain.phash) > 16


def test_a_phone_photo_is_loaded_upright_and_found_as_a_copy_of_the_upright_file(tmp_path, model):
    folder = tmp_path / "camera roll"
    folder.mkdir()
    upright = _photo()
    (folder / "IMG_0001.jpg").write_bytes(_tagged(upright, 6))          # as the phone wrote it
    (folder / "IMG_0001 exported.jpg").write_bytes(_encoded(upright))   # the same photo, exported upright
    (folder / "scan.png").write_bytes(_encoded(upright, "PNG"))
    (folder / "scan turned.png").write_bytes(_tagged(upright, 8, "PNG"))
    with open_collection(tmp_path / "db", model=model) as photos:
        assert photos.load(folder).loaded == 4
        rows = {Path(r["path"]).name: r for r in photos.sql(
            f"SELECT path, width, height, orientation, embedding, {', '.join(HASH_COLUMNS)} FROM images")}
        assert {(r["width"], r["height"]) for r in rows.values()} == {(512, 600)}   # as shown, not as stored
        assert rows["IMG_0001.jpg"]["orientation"] == 6 and rows["scan turned.png"]["orientation"] == 8
        assert rows["IMG_0001 exported.jpg"]["orientation"] == 1
        # lossless: the very same embedding and hashes; JPEG: the same to within recompression
        assert rows["scan.png"]["embedding"] == rows["scan turned.png"]["embedding"]
        assert all(rows["scan.png"][c] == rows["scan turned.png"][c] for c in HASH_COLUMNS)
        phone, export = (np.array(rows[n]["embedding"]) for n in ("IMG_0001.jpg", "IMG_0001 exported.jpg"))
        assert phone @ export > 0.999
        sideways = model.encode_images([upright.transpose(STORED[6])])[0]
        assert phone @ export > sideways @ export + 0.01       # the old sideways vector was measurably off
        groups = photos.duplicates()
        assert [sorted(Path(r["path"]).name for r in g["images"]) for g in groups] == \
            [sorted(rows)]
        # the thumbnail on the page is upright too
        image_id = photos.sql("SELECT id FROM images WHERE path LIKE '%IMG_0001.jpg'")[0]["id"]
    app = create_app(Settings.load(db=str(tmp_path / "db")), model=model, config={"TESTING": True})
    try:
        thumbs = app.config["THUMB_DIR"]
        thumbs.mkdir(parents=True, exist_ok=True)
        old = thumbs / f"{image_id}.jpg"   # cached sideways by an earlier release
        upright.transpose(STORED[6]).resize((256, 219)).save(old)
        res = app.test_client().get(f"/api/images/{image_id}/file?size=thumb")
        assert res.status_code == 200
        thumb = Image.open(io.BytesIO(res.data))
        assert thumb.size[0] < thumb.size[1] and not old.exists()
    finally:
        app.extensions["clipsearch"].close()


# -- bit depths and transparency ---------------------------------------------------------------------
def _grey(values: np.ndarray, fmt: str) -> bytes:
    out = io.BytesIO()
    Image.fromarray(values).save(out, fmt)
    return out.getvalue()


def test_a_16_bit_scan_is_grey_where_a_viewer_shows_grey_and_two_scans_differ():
    ramp = np.tile(np.linspace(0, 65535, 256), (64, 1)).astype(np.uint16)   # black to white, left to right
    for fmt in ("PNG", "TIFF"):
        shown = np.asarray(open_image(_grey(ramp, fmt)))[..., 0]
        assert shown[0, 0] == 0 and shown[0, -1] == 255 and abs(int(shown[0, 128]) - 128) <= 1, fmt
        other = _grey(ramp[:, ::-1].copy(), fmt)   # white to black: another picture
        assert distance(file_hashes(_grey(ramp, fmt)).phash, file_hashes(other).phash) > 16


def test_float_and_32_bit_tiffs_keep_their_picture():
    ramp = np.tile(np.linspace(0, 1, 256, dtype=np.float32), (64, 1))
    for values in (ramp, ramp * 4000 - 1000):   # 0..1 as it is; any other range by its extent
        shown = np.asarray(open_image(_grey(values, "TIFF")))[..., 0]
        assert shown[0, 0] == 0 and shown[0, -1] == 255 and abs(int(shown[0, 128]) - 128) <= 1
    big = (ramp * 2_000_000_000).astype(np.int32)   # beyond 16 bits: clipping made both of these white
    hashes = [file_hashes(_grey(v, "TIFF")) for v in (big, big[:, ::-1].copy())]
    assert distance(hashes[0].phash, hashes[1].phash) > 16


def test_a_transparent_logo_is_shown_on_white_like_its_jpeg_export():
    logo = Image.new("RGBA", (200, 120), (0, 0, 0, 0))
    logo.paste((20, 20, 20, 255), (40, 30, 160, 90))             # dark lettering on nothing
    export = Image.new("RGB", logo.size, "white")
    export.paste(logo, mask=logo.getchannel("A"))                 # what "save as JPEG" gives
    for fmt, image in (("PNG", logo), ("PNG", logo.convert("LA")), ("GIF", logo.convert("P")),
                       ("WEBP", logo)):
        out = io.BytesIO()
        if fmt == "GIF":
            image = logo.convert("RGB").quantize(colors=4)
            transparent = image.getpixel((0, 0))
            image.save(out, fmt, transparency=transparent)
        else:
            image.save(out, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        shown = open_image(out.getvalue())
        assert shown.getpixel((5, 5)) == (255, 255, 255) and max(shown.getpixel((100, 60))) < 40, fmt
        ours, theirs = file_hashes(out.getvalue()), file_hashes(_encoded(export))
        assert distance(ours.phash, theirs.phash) <= 4, fmt


# -- a stripe ---------------------------------------------------------------------------------------
def _clip_transform():
    """ViT-B-32's image preprocessing as open_clip makes it (short side to 224, centre square), PIL part."""
    from torchvision.transforms import Compose, ToTensor

    from clipsearch.models.clip import import_open_clip
    steps = list(import_open_clip().image_transform(224, is_train=False).transforms)
    return Compose(steps[:next(i for i, s in enumerate(steps) if isinstance(s, ToTensor))])


def test_a_stripe_is_cut_to_what_the_model_keeps_with_bounded_memory(tmp_path, model):
    transform = _clip_transform()
    rng = np.random.default_rng(3)
    # correct: a 7x1500 stripe (the whole resize is 32 MB here) gives the model the same input either way
    stripe = Image.fromarray(rng.integers(0, 256, (1500, 7, 3), dtype=np.uint8))
    cut = fit_for_model(stripe, transform)
    assert cut.size == (7, 16)   # the square, 4 pixels more each side, an even cut
    whole, ours = (np.asarray(transform(im), dtype=float) for im in (stripe, cut))
    assert ours.shape == (224, 224, 3) and np.abs(whole - ours).mean() < 1 and np.abs(whole - ours).max() <= 4
    # a model that squashes the whole picture (the bundled one) gets it as it is
    assert fit_for_model(stripe, model.prepare()) is stripe
    # bounded: a 161-byte 1x20000 PNG took gigabytes in the model's resize
    path = tmp_path / "stripe.png"
    Image.new("RGB", (1, 20000), (90, 140, 200)).save(path)
    loader._setup_worker(transform, 224, MAX_FILE_BYTES, loader.MAX_PIXELS)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    row = loader.prepare(str(path))
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    assert row["pixels"].shape == (224, 224, 3) and (row["width"], row["height"]) == (1, 20000)
    assert after - before < 200_000_000


def test_a_stripe_as_a_query_image_is_cut_where_it_is_encoded(tmp_path, model, monkeypatch):
    """A query image (CLI --image, the Python API, an upload) is cut where the collection encodes it, for a
    model that keeps the centre square; the bundled model (which squashes) sees it whole."""
    stripe = Image.new("RGB", (3, 20000), (90, 140, 200))
    with open_collection(tmp_path / "db", model=model) as photos:
        assert photos._fit(stripe) is stripe
        seen: list[tuple[int, int]] = []
        monkeypatch.setattr(type(model), "prepare", lambda self: _clip_transform())
        monkeypatch.setattr(type(model), "encode_images", lambda self, images: seen.extend(i.size for i in images)
                            or np.full((len(images), self.dim), self.dim ** -0.5, np.float32))
        photos.label_image(stripe, ["a", "b"])
        assert len(seen) == 1 and seen[0][0] == 3 and seen[0][1] <= 3 + 2 * 4 + 1   # the square and a margin


# -- special files --------------------------------------------------------------------------------
@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_file_swapped_for_a_pipe_or_a_link_while_loading_never_hangs(tmp_path):
    loader._setup_worker(lambda im: im, 64, MAX_FILE_BYTES, loader.MAX_PIXELS)
    photo = tmp_path / "IMG_0002.jpg"
    os.mkfifo(photo)   # listed as a photo, a pipe by the time it is opened: no writer will ever come
    results: list[dict] = []
    reader = threading.Thread(target=lambda: results.append(loader.prepare(str(photo))), daemon=True)
    reader.start()
    reader.join(10)
    if reader.is_alive():   # unblock the hung open before failing
        os.close(os.open(photo, os.O_WRONLY | os.O_NONBLOCK))
    assert results == [{"path": str(photo), "error": "not a regular file"}]
    # a folder named like a photo (or a manifest row naming a folder) is no photo either, and no crash
    album = tmp_path / "IMG_0004.jpg"
    album.mkdir()
    assert loader.prepare(str(album)) == {"path": str(album), "error": "not a regular file"}
    # a link put in a photo's place after the folder was listed (the path was no link then) is not followed
    secret = tmp_path / "elsewhere.jpg"
    secret.write_bytes(_encoded(_photo()))
    swapped = tmp_path / "IMG_0003.jpg"
    swapped.symlink_to(secret)
    real_islink = os.path.islink
    try:
        os.path.islink = lambda p: False if os.fspath(p) == str(swapped) else real_islink(p)
        assert loader.prepare(str(swapped))["error"] == "replaced by a link while it was read"
    finally:
        os.path.islink = real_islink
    assert "id" in loader.prepare(str(swapped))   # a link there when looked at is the folder's policy


# -- dates ------------------------------------------------------------------------------------------
def _dated(folder: Path, name: str, written: str) -> None:
    exif = Image.Exif()
    exif.get_ifd(0x8769)[36867] = written
    Image.new("RGB", (32, 24), (hash(name) % 256, 80, 120)).save(folder / name, exif=exif)


def test_dates_are_kept_where_clickhouse_holds_them_and_recorded_where_not(tmp_path, model):
    folder = tmp_path / "family archive"
    folder.mkdir()
    for name, written in (("great-grandma.jpg", "1899:05:01 10:00:00"), ("wedding.jpg", "1901:06:15 14:30:00"),
                          ("epoch.jpg", "1970:01:01 00:00:00"), ("future.jpg", "2150:01:01 00:00:00"),
                          ("last.jpg", "2299:12:31 23:59:59"), ("broken clock.jpg", "9999:12:31 23:59:59"),
                          ("unset clock.jpg", "0000:00:00 00:00:00")):
        _dated(folder, name, written)
    with open_collection(tmp_path / "db", model=model) as photos:
        photos.load(folder)
        rows = {Path(r["path"]).name: (r["t"], r["exif_date"]) for r in photos.sql(
            "SELECT path, toString(taken_at) AS t, exif_date FROM images")}
        assert rows == {"great-grandma.jpg": (None, "1899:05:01 10:00:00"),
                        "wedding.jpg": ("1901-06-15 14:30:00", ""), "epoch.jpg": ("1970-01-01 00:00:00", ""),
                        "future.jpg": ("2150-01-01 00:00:00", ""), "last.jpg": ("2299-12-31 23:59:59", ""),
                        "broken clock.jpg": (None, "9999:12:31 23:59:59"), "unset clock.jpg": (None, "")}

        def found(*filters: str) -> set[str]:
            return {Path(r["path"]).name for r in photos.search("photo", k=20, filters=list(filters)).rows}
        assert found("taken_at=1970") == {"epoch.jpg"}               # the 1899 photo was stored as 1970 before
        assert found("taken_at<1950") == {"wedding.jpg"}
        assert found("taken_at>=2150-01") == {"future.jpg", "last.jpg"}
        assert found("taken_at=2299-12-31") == {"last.jpg"}
        photos.add_filter_column("taken_at")                          # and through a filter column
        assert found("taken_at>=1901", "taken_at<=1901-12") == {"wedding.jpg"}


# -- a store from before ------------------------------------------------------------------------------
def test_a_store_loaded_before_orientation_is_turned_upright_by_the_hashes_command(tmp_path, model, cli,
                                                                                   monkeypatch):
    folder = tmp_path / "phone"
    folder.mkdir()
    upright = _photo()
    (folder / "IMG_0100.jpg").write_bytes(_tagged(upright, 6))
    (folder / "IMG_0101.png").write_bytes(_tagged(upright, 3, "PNG"))
    (folder / "IMG_0102.png").write_bytes(_encoded(upright.resize((256, 300)), "PNG"))
    _dated(folder, "IMG_0103.jpg", "1899:05:01 10:00:00")
    db = tmp_path / "db"
    from clipsearch.images import decode as decode_module
    monkeypatch.setattr(decode_module, "turned_by_clipsearch", lambda image: False)   # the release before
    with open_collection(db, model=model) as photos:
        assert photos.load(folder).loaded == 4
        photos.add_filter_column("taken_at")
    monkeypatch.undo()
    store = Catalog.open(db)
    try:   # as that release left the table: no orientation, dates clamped into DateTime
        for statement in ("ALTER TABLE images DROP COLUMN orientation", "ALTER TABLE images DROP COLUMN exif_date",
                          "ALTER TABLE images UPDATE taken_at = '1970-01-01 00:00:00' WHERE path LIKE '%0103%' "
                          "SETTINGS mutations_sync = 2",
                          "ALTER TABLE images MODIFY COLUMN taken_at Nullable(DateTime)",
                          "ALTER TABLE schema_version DELETE WHERE version >= 6 SETTINGS mutations_sync = 2"):
            store.connection.command(statement)
        store.indexes.create_vector_index()
    finally:
        store.close()
    before = cli("models", db=db)
    assert before.returncode == 0 and "note: 4 images were loaded before clipsearch read their orientation" \
        in before.stderr
    result = cli("hashes", db=db)
    assert result.returncode == 0, result.stderr
    assert "read the orientation and dates of 4 of 4 images" in result.stdout and "2 turned upright" in result.stdout
    assert "note:" not in cli("models", db=db).stderr
    with open_collection(db, model=model) as photos:
        rows = {Path(r["path"]).name: r for r in photos.sql(
            "SELECT path, width, height, orientation, toString(taken_at) AS t, exif_date, embedding, phash, "
            "toTypeName(taken_at) AS type FROM images")}
        assert {r["type"] for r in rows.values()} == {"Nullable(DateTime64(0))"}
        assert [(rows[n]["width"], rows[n]["height"], rows[n]["orientation"]) for n in sorted(rows)] == \
            [(512, 600, 6), (512, 600, 3), (256, 300, 1), (32, 24, 1)]
        assert (rows["IMG_0103.jpg"]["t"], rows["IMG_0103.jpg"]["exif_date"]) == (None, "1899:05:01 10:00:00")
        expected = model.encode_images([open_image(_tagged(upright, 3, "PNG"))])[0]
        assert np.allclose(rows["IMG_0101.png"]["embedding"], expected, atol=1e-5)
        assert rows["IMG_0101.png"]["phash"] == image_hashes(upright).phash
        assert photos.search("photo", k=10, filters=["taken_at=1970"]).rows == []
        assert {Path(r["path"]).name for r in photos.search(image=str(folder / "IMG_0102.png"), k=3).rows} == \
            {"IMG_0100.jpg", "IMG_0101.png", "IMG_0102.png"}
