"""The analyst policy: one object for everything an analyst's SQL may be and how it runs, used by both places
analysts reach the tables: the page's SQL tab (Collection.analyst_sql / analyst_stream, service/console.py)
and the `analyst` login of `serve`'s ClickHouse HTTP port (service/clickhouse_http.py).

An AnalystPolicy holds
- the statement check (clipsearch.analyst.readonly): the text that runs is ClickHouse's formatting of the
  SQL, which is what was judged; the table functions it refuses are read from the engine once (`check`);
- the system tables an analyst may read (SYSTEM_TABLES) and the current database an analyst may not use;
- the limits every analyst session runs within, set before `readonly = 1` (which the session cannot
  undo): time, memory, threads and the parser's work; a result held whole is also bounded by its rows and
  bytes, a streamed one sent in small blocks;
- the output formats an analyst may ask for, and which of them stream (`streams`);
- the settings an analyst may send: a limit only tightened, a few presentation settings free;
- how an analyst's sessions are opened, through the connection layer (Connection.read_only on any store,
  connection.engine_session on the embedded engine's port).

The engine's own guards beside it, and what each layer stops: sql/README.md#what-analysts-may-run.
"""
from __future__ import annotations

import json
import re
from typing import Any

from clipsearch.analyst import readonly
from clipsearch.analyst.readonly import RunQuery
from clipsearch.errors import QueryError, StoreError
from clipsearch.store.connection import (
    ANALYST_DEFAULTS,
    SETTING_VALUE,
    Connection,
    EmbeddedReadOnly,
    engine_session,
    engine_uri,
)
from clipsearch.store.results import STREAMING_FORMATS

# A query chdb sends block by block in a streaming format (comments and parentheses may come first).
STREAMED_QUERY = re.compile(r"^(\s|--[^\n]*\n|/\*.*?\*/|\()*(SELECT|WITH)\b", re.I | re.S)


def streams(fmt: str, sql: str) -> bool:
    """Whether the embedded engine sends `sql`'s result in `fmt` as it makes it (else it is held whole): the one
    place this is decided, for the limits a query gets and for how the port sends it."""
    return fmt in STREAMING_FORMATS and bool(STREAMED_QUERY.match(sql))


class Refused(QueryError):
    """Something the policy does not allow, with the error a ClickHouse server answers for it (the port sends
    that; the page answers it as every QueryError, a 400 with the message)."""

    def __init__(self, message: str, code: int = 164, name: str = "READONLY"):
        super().__init__(message)
        self.code, self.name = code, name


def setting_value(name: str, value: str) -> int | str:
    """A setting's value from a URL: a number, or a plain word (nothing that could end a quoted literal)."""
    if re.fullmatch(r"-?\d{1,19}", value):
        return int(value)
    if not SETTING_VALUE.match(value):
        raise Refused(f"Cannot parse the value of setting '{name}'", 27, "CANNOT_PARSE_INPUT_ASSERTION_FAILED")
    return value


class AnalystPolicy:
    """What an analyst may run and within what; one per store's engine (the denied table functions are read
    from it once), shared by the page's SQL tab and the port when `serve` runs both."""

    # What one analyst query may use, so a careless one cannot stall the searches that share the engine.
    LIMITS: dict[str, Any] = {"max_execution_time": 30, "max_memory_usage": 2_000_000_000, "max_threads": 1}
    # ClickHouse's parser allows 1,000,000 backtracks (seconds of work on a crafted text); a real query needs
    # far fewer. Every analyst session has these bounds: the check's, and the query's, which parses the text
    # the check parsed under the same bounds.
    PARSER_LIMITS: dict[str, Any] = {"max_parser_backtracks": 100_000, "max_parser_depth": 300}
    CHECK_TIME_S = 5   # the check's own queries (formatQuery, the engine's table functions)
    # A result held whole in memory (the page's SQL tab; a format that cannot stream on the port) is also
    # bounded by its size; a streamed one by the time and memory above.
    HELD_RESULT_LIMITS: dict[str, Any] = {"max_result_rows": 100_000, "max_result_bytes": 64 * 2**20,
                                          "result_overflow_mode": "throw",
                                          "max_block_size": 65_409}   # ClickHouse's: the ceiling for TIGHTEN
    # On the port a result held whole is also bounded by memory: the engine's output buffer counts towards
    # it, and a format can write many times the result's bytes (JSON escapes, Pretty's padding).
    HELD_MEMORY_BYTES = 256 * 2**20
    # The page's SQL tab streams its results from the engine into the service's own process, which keeps at
    # most max_result_bytes of one: the engine makes them in blocks of 128 rows (max_result_bytes is not
    # checked on a streamed result, and a block is made and formatted whole), within a memory bound of its own,
    # so a refused result costs the service a few blocks, not the result.
    PAGE_LIMITS: dict[str, Any] = {"max_block_size": 128, "max_memory_usage": 64 * 2**20}
    # Streamed blocks stay small: a block is formatted whole before it is sent (a long name repeated per row).
    STREAM_LIMITS: dict[str, Any] = {"max_block_size": 8192}
    SYSTEM_TABLES = readonly.SYSTEM_TABLES
    # Output formats an analyst may ask for: every common one, none that reads or writes a schema or template
    # file (Protobuf, CapnProto, Template, ...), whatever an upgrade adds.
    FORMATS = re.compile(r"^(TabSeparated|TSV|CSV|JSON|Native|RowBinary|Values|Pretty|Vertical|Markdown|Parquet|"
                         r"Arrow|ORC|Avro|XML|Null|LineAsString|RawBLOB|SQLInsert|BSONEachRow|MsgPack|Npy)\w*$")
    # Settings an analyst sends (in the port's URL): ClickHouse's settings-constraints semantics, applied
    # before the session turns read-only (chdb's engine cannot load `changeable_in_readonly` constraints). A
    # limit may only tighten: a positive value no larger than the analyst's own, or than ClickHouse's default
    # where the analyst has none (these limits' default is "none", 0). A few presentation settings are free;
    # any other change is refused as a read-only user's would be. Both lists name settings one by one: a
    # family such as output_format_* also holds settings that write files (output_format_schema) or undo a
    # bound (output_format_pretty_max_rows).
    TIGHTEN = ("max_execution_time", "max_memory_usage", "max_result_rows", "max_result_bytes", "max_rows_to_read",
               "max_bytes_to_read", "max_rows_to_group_by", "max_rows_to_sort", "max_bytes_to_sort",
               "max_rows_in_join", "max_bytes_in_join", "max_rows_in_distinct", "max_bytes_in_distinct",
               "max_threads", "max_block_size")   # smaller blocks: less memory (the page's SQL tab sends 128)
    FREE = {"output_format_json_quote_64bit_integers", "output_format_json_quote_64bit_floats",
            "output_format_json_quote_denormals", "output_format_json_quote_decimals",
            "output_format_json_named_tuples_as_objects", "output_format_json_validate_utf8",
            "output_format_json_escape_forward_slashes", "output_format_decimal_trailing_zeros",
            "output_format_csv_crlf_end_of_line", "output_format_tsv_crlf_end_of_line",
            "output_format_write_statistics", "output_format_arrow_string_as_string",
            "output_format_parquet_string_as_string", "output_format_native_encode_types_in_binary_format",
            "output_format_pretty_color", "output_format_pretty_grid_charset", "format_csv_delimiter",
            "format_csv_null_representation", "format_tsv_null_representation", "date_time_output_format",
            "date_time_input_format", "interval_output_format", "bool_true_representation",
            "bool_false_representation", "cast_string_to_dynamic_use_inference", "session_timezone",
            "join_use_nulls", "extremes", "totals_mode", "result_overflow_mode", "timeout_overflow_mode",
            "read_overflow_mode"}

    def __init__(self) -> None:
        self._denied: set[str] | None = None   # the engine's table functions the check refuses, read once

    # -- the statement --------------------------------------------------------------------------------
    def check(self, run: RunQuery, sql: str) -> str:
        """The text to run for `sql` (ClickHouse's formatting of it, which is what was judged), if an analyst may
        run it; else a QueryError saying why. `run` runs the check's own queries, in a session with
        check_settings."""
        if self._denied is None:
            self._denied = readonly.denied_functions(run)
        return readonly.check(run, sql, self._denied)

    def output_format(self, text: str, default: str) -> str:
        """The format the checked `text` answers in (its FORMAT clause, else `default`), if an analyst may use it."""
        fmt = readonly.output_format(text) or default
        if not self.FORMATS.match(fmt):
            raise Refused(f"the output format {fmt} is not available to analysts (it reads or writes schema files)")
        return fmt

    @staticmethod
    def refuse_format_clause(text: str) -> None:
        """For a caller that asks for the result's format itself (the page's SQL tab): the checked `text` must
        not name one."""
        if readonly.output_format(text):
            raise QueryError("leave out FORMAT: the result's format is asked for beside the SQL (the page's SQL "
                             "tab asks for JSON, and CSV for the download)")

    def settings_as_sent(self, text: str) -> str:
        """The checked `text` with system.settings read as the port's analysts have it: `readonly` 0 for the
        settings they may send (TIGHTEN, FREE), so a client that reads it first (clickhouse-connect) sends
        them; the engine's session says 1 for every setting, since it is read-only and the port applies them
        before. Only a table read (FROM or JOIN system.settings) is replaced, by a fixed subquery of it."""
        changeable = ", ".join(f"'{name}'" for name in sorted({*self.TIGHTEN, *self.FREE}))
        view = (f"(SELECT * REPLACE (if(name IN ({changeable}), 0, readonly) AS readonly) FROM system.settings)")

        def replace(match: re.Match) -> str:
            return match.group(0) if match.group("quoted") else f"{match.group('join')} {view}"
        return re.sub(rf"(?P<quoted>{readonly.QUOTED.pattern})|(?P<join>\b(?:FROM|JOIN))\s+system\.settings\b(?!\s*\.)",
                      replace, text, flags=re.S)

    @staticmethod
    def check_database(database: str | None) -> None:
        """An analyst's current database may be any but `system` (its tables are named system.<table>, which
        the check sees)."""
        if database is not None and database.lower() == "system":
            raise Refused("an analyst's current database cannot be system (name system tables as system.<table>)",
                          291, "DATABASE_ACCESS_DENIED")

    # -- the sessions' settings (each session also gets readonly = 1, set last) ----------------------------
    def check_settings(self) -> dict[str, Any]:
        """The check's own session: its parser bounded, so a crafted text is refused in a fraction of a second."""
        return {**self.LIMITS, **self.PARSER_LIMITS, "max_execution_time": self.CHECK_TIME_S}

    def page_settings(self) -> dict[str, Any]:
        """The page's SQL tab: its results are held by the service, so bounded in rows and bytes."""
        return {**ANALYST_DEFAULTS, **self.LIMITS, **self.PARSER_LIMITS, **self.HELD_RESULT_LIMITS, **self.PAGE_LIMITS}

    def port_settings(self, fmt: str, text: str, requested: dict[str, str], defaults: dict[str, Any]) -> dict[str, Any]:
        """A port query's session: `defaults` (the port's), the limits for a result that streams or is held
        whole, and the settings the analyst `requested` (resolve_settings)."""
        limits = {**self.LIMITS, **self.PARSER_LIMITS}
        limits.update(self.STREAM_LIMITS if streams(fmt, text) else
                      {**self.HELD_RESULT_LIMITS, "max_memory_usage": self.HELD_MEMORY_BYTES})
        return self.resolve_settings(requested, {**defaults, **limits})

    def resolve_settings(self, requested: dict[str, str], base: dict[str, Any]) -> dict[str, Any]:
        """`base` with the settings an analyst sent: a limit only tightened (TIGHTEN), a FREE setting as sent,
        anything else refused as ClickHouse refuses a read-only user (Code 164)."""
        out = dict(base)
        for name, value in requested.items():
            if name in base and str(base[name]) == value:
                continue   # the value it has already: not a change (clipsearch's own read-only client sends these)
            if name in self.TIGHTEN:
                ceiling = int(base.get(name, 0) or 0)
                if not re.fullmatch(r"[0-9]{1,18}", value) or int(value) < 1 or (ceiling and int(value) > ceiling):
                    bound = f"1 to {ceiling}" if ceiling else "a positive number"
                    raise Refused(f"Cannot modify '{name}' setting in readonly mode: an analyst may only tighten it "
                                  f"({bound})")
                out[name] = int(value)
            elif name in self.FREE:
                out[name] = setting_value(name, value)
            else:
                raise Refused(f"Cannot modify '{name}' setting in readonly mode")
        return out

    # -- opening sessions -------------------------------------------------------------------------------
    def open_page_sessions(self, connection: Connection) -> tuple[Connection, Connection]:
        """The page's two read-only sessions on `connection`'s store: the check's and the queries'."""
        checker = connection.read_only(self.check_settings())
        try:
            return checker, connection.read_only(self.page_settings())
        except BaseException:
            checker.close()
            raise

    @staticmethod
    def open_engine_session(uri: str, settings: dict[str, Any], database: str | None = None) -> Any:
        """An analyst's session of its own on the embedded engine at `uri` (connection.engine_uri), read-only."""
        return engine_session(uri, {**settings, "readonly": 1}, database)

    def check_on(self, checker: Connection, sql: str) -> str:
        """`check` for the page's SQL tab, on the same path as the port's: on the embedded engine each of the
        check's queries runs on a session of its own (check_on_engine), not queued behind other requests' on
        one shared client; on a ClickHouse server, on `checker` (open_page_sessions' first)."""
        if isinstance(checker, EmbeddedReadOnly):
            return self.check_on_engine(engine_uri(checker.where), sql)
        return self.check(checker.query, sql)

    def check_on_engine(self, uri: str, sql: str) -> str:
        """`check` on the embedded engine at `uri`, each of its queries on a session of its own (checks run side
        by side) with check_settings."""
        def run(query: str, params: dict) -> list[dict]:
            conn = self.open_engine_session(uri, self.check_settings())
            try:
                text = conn.query(query, "JSONEachRow", params=params).bytes().decode()
            except Exception as exc:
                raise StoreError(str(exc)) from None
            finally:
                conn.close()
            return [json.loads(line) for line in text.splitlines() if line]
        return self.check(run, sql)
