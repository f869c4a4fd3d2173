"""Dates and places from EXIF: taken_at periods (2024-06 is all of June), GPS tags into latitude and
longitude, `near=LAT,LON,KM` by greatCircleDistance, old tables migrated; photos written with known tags."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from clipsearch.errors import QueryError
from clipsearch.loader.load import load
from clipsearch.search.filters import parse_filter
from clipsearch.search.searcher import Searcher
from clipsearch.service import shapes
from clipsearch.store.catalog import Catalog

PLACES = {"paris": (48.8566, 2.3522), "versailles": (48.8049, 2.1204), "sydney": (-33.8688, 151.2093),
          "new-york": (40.7128, -74.0060), "nowhere": None}
TAKEN = {"paris": "2024:06:01 00:00:00", "versailles": "2024:06:30 23:00:00", "sydney": "2024:07:01 00:00:00",
         "new-york": "2023:12:31 23:30:00", "nowhere": None}


def _dms(degrees: float) -> tuple[float, float, float]:
    d = abs(degrees)
    return float(int(d)), float(int(d * 60 % 60)), round(d * 3600 % 60, 4)


def write_photo(path, seed: int, taken: str | None, place: tuple[float, float] | None) -> None:
    """A JPEG with EXIF DateTimeOriginal and GPS tags, as a phone writes them."""
    picture = Image.open(io.BytesIO(shapes.make_image(np.random.default_rng(seed), "blue", "circle")[1]))
    exif = Image.Exif()
    if taken:
        exif.get_ifd(0x8769)[36867] = taken
    if place:
        gps = exif.get_ifd(0x8825)
        gps[1], gps[2] = "N" if place[0] >= 0 else "S", _dms(place[0])
        gps[3], gps[4] = "E" if place[1] >= 0 else "W", _dms(place[1])
    path.parent.mkdir(exist_ok=True)
    picture.convert("RGB").save(path, "JPEG", exif=exif)


@pytest.fixture(scope="module")
def photo_db(tmp_path_factory, model):
    folder = tmp_path_factory.mktemp("exif")
    for i, name in enumerate(PLACES):
        write_photo(folder / "photos" / f"{name}.jpg", i, TAKEN[name], PLACES[name])
    with Catalog.open(folder / "db") as store:
        assert load(str(folder / "photos"), store, model, progress=False).loaded == len(PLACES)
    return folder / "db"


@pytest.fixture
def photos(photo_db, model):
    with Catalog.open(photo_db) as store:  # one embedded store per process at a time: opened per test
        yield Searcher(store, lambda: model, log=False)


def _names(searcher, *filters, **kwargs) -> set[str]:
    rows = searcher.search("a blue circle", k=100, filters=[parse_filter(f) for f in filters], **kwargs).rows
    return {r["path"].rsplit("/", 1)[1].removesuffix(".jpg") for r in rows}


def test_gps_tags_become_latitude_and_longitude(photos):
    stored = photos.catalog.query("SELECT path, latitude, longitude FROM images")
    rows = {r["path"].rsplit("/", 1)[1]: r for r in stored}
    for name, place in PLACES.items():
        got = rows[f"{name}.jpg"]
        if place is None:
            assert (got["latitude"], got["longitude"]) == (None, None)
        else:
            np.testing.assert_allclose((got["latitude"], got["longitude"]), place, atol=1e-4)


@pytest.mark.parametrize("expr,expected", [
    ("near=48.8566,2.3522,10", {"paris"}),                     # Versailles is 17 km away
    ("near=48.8566,2.3522,20", {"paris", "versailles"}),
    ("near=-33.87,151.21,1", {"sydney"}),
    ("near=40.7,-74.0,5000", {"new-york"}),
    ("latitude is null", {"nowhere"}),
])
def test_near_a_place(photos, expr, expected):
    assert _names(photos, expr) == expected


@pytest.mark.parametrize("expr,expected", [
    ("taken_at=2024-06", {"paris", "versailles"}),            # the whole month, to its last hour
    ("taken_at=2024", {"paris", "versailles", "sydney"}),
    ("taken_at=2024-06-30", {"versailles"}),
    ("taken_at<=2024-06", {"new-york", "paris", "versailles"}),
    ("taken_at>2024-06", {"sydney"}),
    ("taken_at>=2024-06-15", {"versailles", "sydney"}),
    ("taken_at<2024", {"new-york"}),
    ("taken_at!=2024-06", {"new-york", "sydney"}),
    ("taken_at=2024-06-01 00:00:00", {"paris"}),
    ("taken_at is null", {"nowhere"}),
])
def test_date_periods(photos, expr, expected):
    assert _names(photos, expr) == expected


def test_year_facet_and_bad_places(photos):
    result = photos.search("a blue circle", k=10, facets=["taken_at"])
    assert {c["value"]: c["count"] for c in result.facets["taken_at"]} == {"2024": 3, "2023": 1, None: 1}
    for expr, message in (("near=1,2", "near takes LAT,LON,KM"), ("near=91,0,5", "latitude -90..90"),
                          ("near=0,0,-1", "distance above 0"), ("near>1,2,3", "near takes '='"),
                          ("taken_at=June", "is not a date")):
        with pytest.raises(QueryError, match=message):
            photos.search("a blue circle", filters=[parse_filter(expr)])


def test_old_tables_get_the_gps_columns(tmp_path):
    with Catalog.open(tmp_path / "db") as store:   # as a release before schema versions made it
        store.owner_sql("DROP TABLE images")
        store.owner_sql("DROP TABLE schema_version")
        store.owner_sql("CREATE TABLE images (id String, path String, width UInt32, height UInt32, "
                      "format LowCardinality(String), file_size UInt64, taken_at Nullable(DateTime), "
                      "camera String DEFAULT '', model LowCardinality(String), loaded_at DateTime64(3) DEFAULT "
                      "now64(3), embedding Array(Float32)) ENGINE = ReplacingMergeTree(loaded_at) ORDER BY id")
    with Catalog.open(tmp_path / "db") as store:
        columns = list(store.images.columns())
    assert columns.index("latitude") == columns.index("camera") + 1 and "longitude" in columns
