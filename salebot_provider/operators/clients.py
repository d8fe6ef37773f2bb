"""LoadClientsOperator: import clients in chunks; each row ends loaded (with its id) or failed (and why)."""

from __future__ import annotations

import itertools
import json
import shutil
import tempfile
from typing import TYPE_CHECKING, Any, ClassVar

from salebot_provider.api import batched, check_client_item
from salebot_provider.exceptions import SalebotValidationError
from salebot_provider.operators._base import (
    SalebotOperator,
    asked_to_stop,
    check_count,
    check_flag,
    interrupted,
    is_literal,
)
from salebot_provider.operators._ledger import Fingerprint, Ledger
from salebot_provider.operators._sources import Rows, output_path

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence
    from typing import IO

    from airflow.providers.common.compat.sdk import Context

#: The most client ids returned in the XCom; more go to ``output_path``.
MAX_XCOM_IDS = 10_000
#: The most in-doubt rows named in an error (all of them are in ``output_path``).
SHOWN_ROWS = 20
#: The most failures listed in the XCom (all of them are in ``output_path``).
MAX_XCOM_FAILURES = 100
FIELDS = ("platform_id", "group_id", "client_type")


def _item(where: str, row: Any) -> dict[str, Any]:
    """One row as the API takes it: the three fields, ``client_type`` as a number."""
    if not isinstance(row, dict):
        return check_client_item("load_clients", where, row)  # names what is wrong
    item = {k: row.get(k) for k in FIELDS}
    if isinstance(item["client_type"], str) and item["client_type"].strip().isdigit():
        item["client_type"] = int(item["client_type"])
    check_client_item("load_clients", where, item)
    return item


def _rows_text(first: int, last: int) -> str:
    return f"row {first}" if first == last else f"rows {first}-{last}"


class LoadClientsOperator(SalebotOperator):
    """
    Import clients into Salebot (``load_clients``) in chunks; each row ends loaded or failed, with why.

    ``clients`` is a list of ``{"platform_id", "group_id", "client_type"}`` dicts (an XCom works), or
    the path or URI of a ``.jsonl`` or ``.csv`` file with those columns, read as a stream. Every row
    is checked before the first request: the three fields present, ``client_type`` a whole number,
    ``group_id`` empty only for telephony (client_type 13); WhatsApp numbers are taken with or
    without ``@s.whatsapp.net``. Other columns are not sent.

    A request that fails outright is never repeated after it may have been processed. On Airflow
    3.3+ the progress (and each chunk's ids) is kept in the task's ``task_state_store``, so a retry
    or a clear loads only the rows not tried; without it the task fails for good and says which rows
    to load again.

    .. code-block:: python

        LoadClientsOperator(
            task_id="load_leads",
            clients="s3://crm/leads/{{ ds }}.csv",
            output_path="s3://crm/loaded/{{ ds }}.jsonl",
        )

    :param clients: the rows: a list of dicts, a JSON list, or a file's path or URI. (templated)
    :param chunk_size: rows per request (default 500). (templated)
    :param output_path: where to write every row's outcome as JSON Lines (``item``, ``id``,
        ``status``: loaded, failed, in_doubt or not_tried, and ``reason``): a local path, a URI or
        an ``ObjectStoragePath``. Required for more than 10,000 rows. (templated)
    :param fail_on_item_error: fail the task (after every chunk was processed) if any row failed;
        False returns the summary instead. (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: ``{"loaded": n, "failed": m, "failures": [first 100 {"item", "reason"}],
        "client_ids": [the loaded rows' ids, in input order; None over 10,000 rows],
        "path": output_path or None}``. The ids are also pushed as the XCom ``client_ids``, so a
        downstream task takes them as ``load.output["client_ids"]``.
    """

    template_fields: Sequence[str] = ("clients", "chunk_size", "output_path", "fail_on_item_error")
    template_fields_renderers: ClassVar[dict[str, str]] = {"clients": "py"}

    def __init__(
        self,
        *,
        clients: Any,
        chunk_size: int = 500,
        output_path: Any = None,
        fail_on_item_error: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.clients = clients
        self.chunk_size = chunk_size
        self.output_path = output_path
        self.fail_on_item_error = fail_on_item_error
        if is_literal(chunk_size):
            check_count("load_clients", "chunk_size", chunk_size, 500)
        if is_literal(fail_on_item_error):
            check_flag("load_clients", "fail_on_item_error", fail_on_item_error)
        if isinstance(clients, list | tuple) and is_literal(clients):
            for where, row in Rows("load_clients", "clients", clients):
                _item(where, row)  # a mistake in a literal list shows when the DAG file is parsed

    def execute(self, context: Context) -> dict[str, Any]:
        """Check every row, then load; see the class docstring."""
        size = check_count("load_clients", "chunk_size", self.chunk_size, 500)
        fail_on_item_error = check_flag("load_clients", "fail_on_item_error", self.fail_on_item_error)
        rows = Rows("load_clients", "clients", self.clients)
        fingerprint = Fingerprint("load_clients", size)
        total = 0
        for where, row in rows:
            fingerprint.add(_item(where, row))
            total += 1
        if total > MAX_XCOM_IDS and self.output_path is None:
            raise SalebotValidationError(
                f"Salebot load_clients: {total:,} rows is more than the {MAX_XCOM_IDS:,} client ids an XCom "
                "should carry; give 'output_path' for the ids",
                action="load_clients",
            )
        ledger = Ledger(context, "load_clients", fingerprint.digest, total)
        secret = self.hook.settings.api_key  # the connection is read before anything is sent
        items = (_item(where, row) for where, row in rows)
        with tempfile.TemporaryFile("w+", encoding="utf-8") as spool:
            self._earlier(ledger, items, size, spool)
            try:
                self._load(ledger, items, size, spool)
            except BaseException as exc:
                error = interrupted("load_clients", exc, secret)
                for item in items:
                    _write(spool, item, None, "not_tried")
                self._output(spool)
                if ledger.durable and not isinstance(exc, Exception):
                    raise  # a task timeout or a kill: the record holds the chunk in doubt
                raise ledger.stopped(error, self._account(ledger)) from None
            summary, doubtful = self._summary(spool, total)
        self.log.info(
            "Salebot load_clients: %s rows: %s loaded, %s failed, %s in doubt",
            f"{total:,}",
            f"{summary['loaded']:,}",
            f"{summary['failed']:,}",
            f"{len(doubtful):,}",
        )
        if doubtful or (summary["failed"] and fail_on_item_error):
            from airflow.providers.common.compat.sdk import AirflowFailException

            rows_in_doubt = (
                f" (rows {', '.join(map(str, doubtful[:20]))}{', ...' if len(doubtful) > 20 else ''})"
            )
            raise AirflowFailException(
                f"Salebot load_clients: every row was tried: {summary['loaded']:,} loaded, "
                f"{summary['failed']:,} failed, {len(doubtful):,} in doubt"
                f"{rows_in_doubt if doubtful else ''}: a request or its reply failed after it may have "
                f"been processed; not resent. First failures: {summary['failures'][:5]}"
                + (f". Every row's outcome is in {summary['path']}" if summary["path"] else "")
            )
        if summary["client_ids"] is not None and context.get("ti") is not None:
            # So that a downstream task can take them as ``load.output["client_ids"]``.
            context["ti"].xcom_push(key="client_ids", value=summary["client_ids"])
        return summary

    def _earlier(self, ledger: Ledger, items: Iterator[dict[str, Any]], size: int, spool: IO[str]) -> None:
        """Write the outcome of the rows that earlier tries of this task instance handled."""
        for start in range(0, ledger.cursor, size):
            chunk = list(itertools.islice(items, size))
            outcome: list[tuple[str, Any, str | None]]
            if any(a <= start < b for a, b in ledger.in_doubt):
                outcome = [("in_doubt", None, "its request may have been processed")] * len(chunk)
            else:
                outcome = _unpack(ledger.kept(start), len(chunk))
            for item, (status, client_id, reason) in zip(chunk, outcome, strict=True):
                _write(spool, item, client_id, status, reason)

    def _load(self, ledger: Ledger, items: Iterator[dict[str, Any]], size: int, spool: IO[str]) -> None:
        from salebot_provider.hooks.salebot import Progress

        start = ledger.cursor
        progress = Progress(self.log, "Salebot load_clients: rows", ledger.get("total"))
        progress.done = start
        for chunk in batched(items, size):
            end = start + len(chunk)
            ledger.begin(start, end)
            try:
                reply = self.hook.load_clients(chunk)
            except BaseException as exc:
                in_doubt = interrupted("load_clients", exc, None).in_doubt
                ledger.failed(in_doubt)
                for item in chunk:
                    if in_doubt:
                        _write(spool, item, None, "in_doubt", "its request may have been processed")
                    else:
                        _write(spool, item, None, "not_tried")
                if in_doubt:
                    self.log.warning(
                        "Salebot load_clients: %s in doubt (not resent)", _rows_text(start + 1, end)
                    )
                raise
            outcome = _outcome(chunk, reply)
            for item, (status, client_id, reason) in zip(chunk, outcome, strict=True):
                _write(spool, item, client_id, status, reason)
            ledger.keep(start, _pack(outcome))
            counts = {status: sum(1 for o in outcome if o[0] == status) for status in STATUSES}
            ledger.done(end, **counts)
            progress.add(len(chunk))
            start = end
            if self.stop_asked and start < ledger.get("total"):
                raise asked_to_stop("load_clients")

    def _account(self, ledger: Ledger) -> str:
        total, cursor = ledger.get("total"), ledger.cursor
        parts = [f"{ledger.count('loaded'):,} rows loaded, {ledger.count('failed'):,} failed"]
        if ledger.count("in_doubt"):
            parts.append(f"{ledger.count('in_doubt'):,} rows not accounted for in Salebot's replies")
        parts += [f"{_rows_text(a + 1, b)} in doubt" for a, b in ledger.in_doubt]
        if cursor < total:
            parts.append(f"{_rows_text(cursor + 1, total)} not tried")
        return "; ".join(parts) + " (rows counted from 1, in input order)"

    def _output(self, spool: IO[str]) -> str | None:
        if self.output_path is None:
            return None
        spool.seek(0)
        path = output_path(self.output_path)
        with path.open("w", encoding="utf-8") as out:
            shutil.copyfileobj(spool, out)
        return str(self.output_path)

    def _summary(self, spool: IO[str], total: int) -> tuple[dict[str, Any], list[int]]:
        """The XCom summary, from every row's outcome; and the rows (from 1) in doubt."""
        loaded = failed = 0
        failures: list[dict[str, Any]] = []
        doubtful: list[int] = []
        client_ids: list[Any] | None = [] if total <= MAX_XCOM_IDS else None
        spool.seek(0)
        for number, line in enumerate(spool, 1):
            row = json.loads(line)
            if row["status"] == "loaded":
                loaded += 1
                if client_ids is not None:
                    client_ids.append(row["id"])
            elif row["status"] == "failed":
                failed += 1
                if len(failures) < MAX_XCOM_FAILURES:
                    failures.append({"item": row["item"], "reason": row["reason"]})
            else:
                doubtful.append(number)
        summary = {
            "loaded": loaded,
            "failed": failed,
            "failures": failures,
            "client_ids": client_ids,
            "path": self._output(spool),
        }
        return summary, doubtful


#: What a loaded chunk's rows can end as.
STATUSES = ("loaded", "failed", "in_doubt")


def _platform(value: Any) -> str:
    return str(value).strip().removesuffix("@s.whatsapp.net")


def _outcome(chunk: list[dict[str, Any]], reply: Any) -> list[tuple[str, Any, str | None]]:
    """
    Each row's ``(status, id, reason)`` from the reply's items, which come in request order.

    Salebot echoes each item's fields; a reply item that does not echo its row's (or is missing)
    leaves the row in doubt: its request was processed, but which id is whose is unknown.
    """
    replied = reply.get("items") if isinstance(reply, dict) else None
    replied = replied if isinstance(replied, list) else []
    outcome: list[tuple[str, Any, str | None]] = []
    for index, item in enumerate(chunk):
        got = replied[index] if index < len(replied) else None
        if not isinstance(got, dict) or any(
            key in got and _platform(got[key]) != _platform(item[key]) for key in FIELDS
        ):
            outcome.append(("in_doubt", None, "Salebot's reply did not account for this row"))
        elif got.get("status") == "success" and got.get("id") is not None:
            outcome.append(("loaded", got["id"], None))
        else:
            reason = got.get("message") or got.get("status") or "no id in Salebot's reply"
            outcome.append(("failed", None, str(reason)[:200]))
    return outcome


def _pack(outcome: list[tuple[str, Any, str | None]]) -> dict[str, Any]:
    """A chunk's outcome, small enough for task_state_store: ids, and each reason once."""
    reasons: dict[str, list[int]] = {}
    for index, (status, _, reason) in enumerate(outcome):
        if status != "loaded":
            reasons.setdefault(f"{status}:{reason}", []).append(index)
    return {"ids": [client_id for _, client_id, _ in outcome], "reasons": reasons}


def _unpack(kept: Any, count: int) -> list[tuple[str, Any, str | None]]:
    if not isinstance(kept, dict) or len(kept.get("ids", ())) != count:
        return [("in_doubt", None, "an earlier try loaded it; its outcome was not kept")] * count
    outcome: list[tuple[str, Any, str | None]] = [("loaded", i, None) for i in kept["ids"]]
    for key, indexes in kept["reasons"].items():
        status, _, reason = key.partition(":")
        for index in indexes:
            outcome[index] = (status, None, reason)
    return outcome


def _write(spool: IO[str], item: Any, client_id: Any, status: str, reason: str | None = None) -> None:
    spool.write(json.dumps({"item": item, "id": client_id, "status": status, "reason": reason}) + "\n")
