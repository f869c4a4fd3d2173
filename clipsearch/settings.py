"""One settings object: defaults, then the environment, then what the caller passes (flags, config)."""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

DEFAULT_DB = "./clipsearch-data"
ENVIRONMENT = {                      # field -> environment variable
    "db": "CLIPSEARCH_DB",
    "clickhouse_url": "CLICKHOUSE_URL",
    "model": "CLIPSEARCH_MODEL",
    "pretrained": "CLIPSEARCH_PRETRAINED",
    "thumbs": "CLIPSEARCH_THUMBS",
    "rate_limit": "CLIPSEARCH_RATE_LIMIT",
    "analyst_password": "CLIPSEARCH_ANALYST_PASSWORD",
}


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

    def __post_init__(self) -> None:
        # Paths are resolved once, here: a relative one means the folder the command started in, whatever
        # later resolves it (Flask's send_file reads a relative path against the app's package folder).
        object.__setattr__(self, "db", os.path.abspath(os.path.expanduser(self.db)))
        if self.thumbs:
            object.__setattr__(self, "thumbs", os.path.abspath(os.path.expanduser(self.thumbs)))

    @classmethod
    def load(cls, environ: Mapping[str, str] | None = None, **overrides: str | None) -> Settings:
        """Defaults < environment < overrides (None means "not given").

        An explicit `db` beats a CLICKHOUSE_URL from the environment: a flag names this run's store.
        """
        environ = os.environ if environ is None else environ
        values = {name: environ[var] for name, var in ENVIRONMENT.items() if environ.get(var)}
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
