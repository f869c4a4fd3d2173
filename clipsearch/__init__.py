"""clipsearch: natural-language and image search over photo collections, ranked by ClickHouse in SQL.

The library in a few lines (the CLI and the web service are thin layers over it):

    import clipsearch
    with clipsearch.open("./clipsearch-data") as photos:      # or url="http://user:pw@host:8123/db"
        photos.load("~/photos")
        result = photos.search("a red car at night", k=5, filters=["width>=1024"])
        for hit in result.rows:
            print(f"{hit['score']:.3f} {hit['path']}")
"""
from clipsearch.collection import Collection, open
from clipsearch.errors import (
                     ClipsearchError,
                     EmptyStore,
                     FileChanged,
                     ModelError,
                     ModelMismatch,
                     NotFound,
                     QueryError,
                     SourceError,
                     StoreError,
                     StoreUnavailable,
)
from clipsearch.settings import Settings

__all__ = ["Collection", "open", "Settings", "ClipsearchError", "QueryError", "SourceError", "NotFound", "EmptyStore",
           "ModelMismatch", "ModelError", "FileChanged", "StoreError", "StoreUnavailable"]
__version__ = "0.2.0"
