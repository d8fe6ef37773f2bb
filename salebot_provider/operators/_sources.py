"""Where the operators' long inputs come from: a list (or an XCom), or a file read as a stream."""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Mapping
from typing import Any

from salebot_provider.api import check_param, parse_rendered
from salebot_provider.exceptions import SalebotValidationError

#: File suffixes read as one JSON value per line.
JSONL_SUFFIXES = (".jsonl", ".ndjson")


def is_path(value: Any) -> bool:
    """
    Whether an operator argument names a file rather than holding the values.

    A string is a path (local, or a URI such as ``s3://bucket/ids.csv``) unless it looks like a
    list or a mapping, which is what an XCom rendered by a plain Jinja template becomes.
    """
    if isinstance(value, str):
        return not value.lstrip().startswith(("[", "{"))
    return isinstance(value, os.PathLike) or (hasattr(value, "open") and hasattr(value, "suffix"))


def open_path(value: Any) -> Any:
    """A local path or a URI as a path object: ``ObjectStoragePath`` reads ``file://``, ``s3://`` ..."""
    if isinstance(value, str) and "://" in value:
        from airflow.providers.common.compat.sdk import ObjectStoragePath

        return ObjectStoragePath(value)
    if isinstance(value, str | os.PathLike):
        from pathlib import Path

        return Path(value)
    return value


def output_path(value: Any) -> Any:
    """
    Where an operator writes: as :func:`open_path`, with a local folder made when it is missing.

    Object stores have no folders to make; a local path, given plainly or as ``file://``, does.
    """
    path = open_path(value)
    if getattr(path, "protocol", "file") in ("file", "local"):
        path.parent.mkdir(parents=True, exist_ok=True)
    return path


class Rows:
    """
    The rows of one input, read again from the start on each iteration, with their place for errors.

    Iterating yields ``(where, row)``: ``where`` names the row in an error message (``clients[3]``,
    or ``line 4 of /data/ids.csv``). A list is used as given; a file is read as a stream, so memory
    stays flat whatever its size: one id per line (any suffix but those below), JSON Lines
    (``.jsonl``, ``.ndjson``), or CSV with a header (``.csv``).

    :param action: the action, for error messages.
    :param param: the operator argument the input came from.
    :param value: a list, a JSON list as text, a local path, a URI or an ``ObjectStoragePath``.
    :param column: for ids: the column (CSV) or key (JSON Lines) that holds the id; None for whole
        records (a CSV row or a JSON object each).
    :param keyed: for records given as a mapping: the names of its keys and of its values in each
        record, e.g. ``("client_id", "variables")``.
    """

    def __init__(
        self,
        action: str,
        param: str,
        value: Any,
        *,
        column: str | None = None,
        keyed: tuple[str, str] | None = None,
    ) -> None:
        self.action, self.param, self.column = action, param, column
        self.path = open_path(value) if is_path(value) else None
        if self.path is None:
            items = self._text(value) if isinstance(value, str) else value
            if isinstance(items, Mapping) and keyed is not None:
                items = [{keyed[0]: k, keyed[1]: v} for k, v in items.items()]
            if isinstance(items, Mapping) or not isinstance(items, list | tuple):
                kind = type(items).__name__
                raise self.error(f"'{param}' must be a list, or the path of a file; got {kind}")
            self.items: list[Any] | tuple[Any, ...] = items
        elif column is None and self.suffix not in (*JSONL_SUFFIXES, ".csv"):
            raise self.error(f"'{param}' must be a .jsonl or .csv file; got {self.path}")

    def _text(self, value: str) -> Any:
        """A list or mapping rendered as text: JSON, or Python's repr of it (what Jinja renders)."""
        try:
            return parse_rendered(value)
        except ValueError:
            raise self.error(
                f"'{self.param}' is text that is neither a JSON list nor a Python literal; pass the "
                "upstream task's output (an XComArg) or a file's path"
            ) from None

    @property
    def suffix(self) -> str:
        """The file's suffix, lower-cased; empty for a list."""
        return str(self.path.suffix).lower() if self.path is not None else ""

    def error(self, message: str) -> SalebotValidationError:
        """A validation error of this input, in the provider's words."""
        return SalebotValidationError(f"Salebot {self.action}: {message}", action=self.action)

    def __iter__(self) -> Iterator[tuple[str, Any]]:
        if self.path is None:
            for index, item in enumerate(self.items):
                yield f"{self.param}[{index}]", item
            return
        try:
            with self.path.open("rb") as raw:
                text = io.TextIOWrapper(raw, encoding="utf-8-sig", newline="")
                if self.suffix == ".csv":
                    yield from self._csv(text)
                elif self.suffix in JSONL_SUFFIXES:
                    yield from self._jsonl(text)
                else:
                    yield from self._lines(text)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise self.error(f"cannot read '{self.param}' from {self.path}: {exc}") from exc

    def _where(self, line: int) -> str:
        return f"{self.param} (line {line} of {self.path})"

    def _lines(self, text: io.TextIOWrapper) -> Iterator[tuple[str, Any]]:
        for line, content in enumerate(text, 1):
            if content.strip():
                yield self._where(line), content.strip()

    def _jsonl(self, text: io.TextIOWrapper) -> Iterator[tuple[str, Any]]:
        for line, content in enumerate(text, 1):
            if not content.strip():
                continue
            try:
                row = json.loads(content)
            except ValueError:
                raise self.error(f"{self._where(line)} is not JSON") from None
            if self.column is None:
                if not isinstance(row, dict):
                    raise self.error(f"{self._where(line)} must be a JSON object")
                yield self._where(line), row
            elif isinstance(row, dict):
                if self.column not in row:
                    raise self.error(f"{self._where(line)} has no '{self.column}'")
                yield self._where(line), row[self.column]
            else:
                yield self._where(line), row

    def _csv(self, text: io.TextIOWrapper) -> Iterator[tuple[str, Any]]:
        reader = csv.DictReader(text)
        header = reader.fieldnames or []
        if self.column is not None and self.column not in header:
            raise self.error(f"'{self.param}' file {self.path} has no '{self.column}' column")
        for row in reader:
            # The header is line 1; a quoted value may span lines, so count as the reader does.
            where = self._where(reader.line_num)
            if None in row:
                raise self.error(f"{where} has more values than the header has columns")
            if None in row.values():
                raise self.error(f"{where} has fewer values than the header has columns")
            yield where, row if self.column is None else row[self.column].strip()


def unique_ids(rows: Rows, kind: str) -> Iterator[tuple[str, Any]]:
    """
    Check each id of an input and drop repeats, the first of each kept (``101`` and ``"101"`` are one).

    :param rows: the input.
    :param kind: ``"id"`` for client ids, ``"key"`` for messenger ids.
    :raises SalebotValidationError: naming the first bad id and where it is.
    """
    seen: set[Any] = set()
    for where, raw in rows:
        value = check_param(rows.action, kind, where, raw.strip() if isinstance(raw, str) else raw)
        key = int(value) if kind == "id" else str(value)  # "007" is client 7
        if key not in seen:
            seen.add(key)
            yield where, value
