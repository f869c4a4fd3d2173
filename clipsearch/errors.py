"""The one root of the errors a user can cause or fix, with the HTTP status and CLI exit code they map to.

The CLI prints `error: <message>` and exits with `exit_code`; the Flask app answers
`{"error": <message>}` with `http_status`. Anything else is a bug: logged, and a 500.
"""
from __future__ import annotations


class ClipsearchError(Exception):
    """A mistake in a request, a command line, a file or the configuration; the message is fit to show."""

    http_status = 400
    exit_code = 1


class QueryError(ClipsearchError, ValueError):
    """The query is invalid: unknown column, wrong value type, bad k, bad weights."""


class SourceError(ClipsearchError, ValueError):
    """What was asked to load cannot be loaded at all: missing, empty, a bad manifest."""


class NoImages(SourceError):
    """A folder to load holds no image file (a watched folder may, for a while)."""


class NotFound(ClipsearchError, LookupError):
    """An image id that is not in the table."""

    http_status = 404


class FileChanged(ClipsearchError):
    """A stored image's file is no longer the one that was loaded (edited, replaced, swapped for a link)."""

    http_status = 410


class EmptyStore(QueryError):
    """Nothing has been loaded yet."""

    http_status = 409


class ModelMismatch(ClipsearchError):
    """The table's vectors come from another model than the configured one."""

    http_status = 409


class ModelError(ClipsearchError):
    """The model could not be loaded (unknown name, missing weights): the service's configuration."""

    http_status = 503


class StoreError(ClipsearchError):
    """ClickHouse refused a statement (bad SQL, a value it cannot parse); ClickHouse's own message."""


class StoreUnavailable(StoreError):
    """The database cannot be opened or reached (in use by another process, server down)."""

    http_status = 503
