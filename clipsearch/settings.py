"""One settings object, the one home of the settings and the service's limits: defaults, then the environment,
then what the caller passes (flags, config). The Flask app's config is made from it (service/app.py)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

DEFAULT_DB = "./clipsearch-data"
ENVIRONMENT = {                      # field -> environment variable
    "db": "CLIPSEARCH_DB",
    "clickhouse_url": "CLICKHOUSE_URL",
    "model": "CLIPSEARCH_MODEL",
    "pretrained": "CLIPSEARCH_PRETRAINED",
    "thumbs": "CLIPSEARCH_THUMBS",
    "rate_limit": "CLIPSEARCH_RATE_LIMIT",
    "analyst_password": "CLIPSEARCH_ANALYST_PASSWORD",
    "allowed_hosts": "CLIPSEARCH_ALLOWED_HOSTS",
    "search_cache": "CLIPSEARCH_SEARCH_CACHE",
    "read_sessions": "CLIPSEARCH_READ_SESSIONS",
}
SEARCH_CACHES = ("on", "texts", "off")


class SettingsError(ValueError):
    """A setting's value is not one it can take (the CLI says so in one line)."""


@dataclass(frozen=True)
class Settings:
    db: str = DEFAULT_DB                 # embedded database folder
    clickhouse_url: str | None = None    # a ClickHouse server instead of the embedded folder
    model: str | None = None             # open_clip model name; None: the bundled model
    pretrained: str | None = None        # open_clip pretrained tag or weights file
    thumbs: str | None = None            # thumbnail cache; None: thumbs/ in the embedded folder
    rate_limit: str | None = None        # per client address on /api/, e.g. "60/minute;1000/hour"; None: off
    # the read-only `analyst` login of `serve`'s ClickHouse HTTP port; None: no such login
    analyst_password: str | None = field(default=None, repr=False)
    # Host names, comma-separated, that `serve`'s two ports answer to besides 127.0.0.1, localhost, ::1 and
    # its --host (e.g. "photos.lan,photos.example.com": what browsers use through a proxy); any other Host
    # is refused, so a page that rebinds its own name to this machine (DNS rebinding) reads nothing
    allowed_hosts: str | None = None
    # What searches reuse (search/cache.py): "on" text vectors and results (until the store is written),
    # "texts" text vectors and rows, not whole answers; "off" nothing (the benchmark's levers)
    search_cache: str = "on"
    # Engine sessions an embedded store's searches read on, its own included (one session runs one statement
    # at a time); None: store.connection.READ_SESSIONS
    read_sessions: int | None = None
    # What one request may make the service read and decode (the Flask app's config is made from these)
    max_upload_bytes: int = 10 * 1024 * 1024   # largest request (an uploaded query image), bytes: 413 above
    max_upload_pixels: int = 16_000_000        # a query image's pixels (PNG, WebP, ...: decoded whole)
    max_upload_jpeg_pixels: int = 100_000_000  # a JPEG query image is decoded at a reduced scale
    thumb_size: int = 256                      # a thumbnail's longest side, pixels

    def __post_init__(self) -> None:
        if self.read_sessions is not None:
            try:
                sessions = int(self.read_sessions)
            except ValueError:
                sessions = -1
            if not 1 <= sessions <= 64:
                raise SettingsError(f"read_sessions (CLIPSEARCH_READ_SESSIONS) is a whole number from 1 to 64, "
                                    f"got {self.read_sessions!r}")
            object.__setattr__(self, "read_sessions", sessions)
        if self.search_cache not in SEARCH_CACHES:
            raise SettingsError(f"search_cache (CLIPSEARCH_SEARCH_CACHE) is one of {', '.join(SEARCH_CACHES)}, "
                             f"got {self.search_cache!r}")
        # Paths are resolved once, here: a relative one means the folder the command started in, whatever
        # later resolves it (Flask's send_file reads a relative path against the app's package folder).
        object.__setattr__(self, "db", os.path.abspath(os.path.expanduser(self.db)))
        if self.thumbs:
            object.__setattr__(self, "thumbs", os.path.abspath(os.path.expanduser(self.thumbs)))

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: str | int | None) -> Settings:
        """Defaults < environment < overrides (None means "not given").

        An explicit `db` beats a CLICKHOUSE_URL from the environment: a flag names this run's store.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {name: environ[var] for name, var in ENVIRONMENT.items() if environ.get(var)}
        given = {name: value for name, value in overrides.items() if value is not None}
        unknown = set(given) - {f.name for f in fields(cls)}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        if "db" in given and "clickhouse_url" not in given:
            values.pop("clickhouse_url", None)
        return replace(cls(), **{**values, **given})

    @property
    def thumbs_dir(self) -> Path:
        if self.thumbs:
            return Path(self.thumbs)
        return Path(self.db) / "thumbs" if not self.clickhouse_url else Path(os.path.abspath("clipsearch-thumbs"))
