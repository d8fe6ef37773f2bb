"""LoadWebhookMessagesOperator: the spool's closed segments loaded into a destination, each once."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from airflow.providers.common.compat.sdk import BaseOperator

from salebot_provider.exceptions import SalebotError, SalebotValidationError

if TYPE_CHECKING:
    from collections.abc import Iterator, Sequence

    from airflow.providers.common.compat.sdk import Context

#: The manifest beside the output: the segments loaded, and the latest message ids (for repeats).
MANIFEST = "_salebot_webhook_manifest.json"
#: Message ids the manifest keeps to drop repeats across runs.
RECENT_IDS = 50_000
_SEGMENT = re.compile(r"^seg-(\d{10})\.jsonl$")
#: The columns of a loaded message, in order.
COLUMNS = (
    "id",
    "client_id",
    "is_input",
    "text",
    "notice",
    "attachments",
    "message_id",
    "project_id",
    "delivered",
    "error_message",
    "recepient",
    "client_type",
    "name",
    "avatar",
    "created_at",
    "tag",
    "group",
    "variables",
    "extra",
    "received_at",
    "receiver",
)
_JSON_COLUMNS = ("attachments", "variables", "extra")
#: The columns left empty with ``include_text=False``: what a person wrote, or who they are.
_PERSONAL = ("text", "attachments", "name", "avatar", "recepient", "variables", "extra")


class LoadWebhookMessagesOperator(BaseOperator):
    """
    Load the webhook messages of every closed spool segment not loaded yet, each segment once.

    ``source`` is a receiver's spool folder, or the folder it ships closed segments to
    (``ship_to``), possibly holding one sub-folder per receiver. Each closed segment
    (``seg-<n>.jsonl``; the open one is left for a later run) becomes one output file under
    ``destination``, at the same relative path, as JSON Lines or Parquet: one row per message with
    the columns of :data:`COLUMNS` (attachments, variables and extra as JSON text). A message whose
    id was loaded lately (the same message posted twice, or to two receivers) is left out.

    The watermark is kept beside the output, in ``<destination>/_salebot_webhook_manifest.json``: the
    segments loaded and the latest 50,000 message ids. Each segment's file is written before the
    manifest names it, so a run that fails between the two writes the same file again next time:
    every segment is loaded once, whatever fails when.

    .. code-block:: python

        LoadWebhookMessagesOperator(
            task_id="load_messages",
            source="s3://salebot-spool/",
            destination="s3://warehouse/salebot/messages/",
            format="parquet",
        )

    :param source: the spool folder or the ``ship_to`` folder (a path or an object storage URI).
        (templated)
    :param destination: the folder the output and the manifest go to. (templated)
    :param format: ``"jsonl"`` (default) or ``"parquet"`` (needs ``pyarrow``). (templated)
    :param include_text: load what a person wrote or is (default True: the warehouse is the place for
        it); False leaves ``text``, ``attachments``, ``name``, ``avatar``, ``recepient``,
        ``variables`` and ``extra`` empty, keeping ids, flags and times.
    :param include_payload: also load the payload exactly as Salebot posted it (column ``payload``);
        it holds the text, so it needs ``include_text``.
    :return: ``{"segments", "messages", "repeats", "unreadable", "destination"}``.
    """

    template_fields: Sequence[str] = ("source", "destination", "format")
    ui_color = "#e3f1ff"

    def __init__(
        self,
        *,
        source: Any,
        destination: Any,
        format: str = "jsonl",
        include_text: bool = True,
        include_payload: bool = False,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.destination = destination
        self.format = format
        self.include_text = include_text
        self.include_payload = include_payload
        if isinstance(format, str) and "{{" not in format:
            self._check_format(format)
        if include_payload and not include_text:
            raise SalebotValidationError(
                "LoadWebhookMessagesOperator: 'include_payload' loads the text as Salebot posted it, "
                "so it cannot go with include_text=False"
            )

    @staticmethod
    def _check_format(value: Any) -> None:
        if value not in ("jsonl", "parquet"):
            raise SalebotValidationError(
                f"LoadWebhookMessagesOperator: 'format' must be 'jsonl' or 'parquet'; got {value!r:.40}"
            )

    def execute(self, context: Context) -> dict[str, Any]:
        """Load what is new; return the counts."""
        from airflow.sdk import ObjectStoragePath

        self._check_format(self.format)
        if self.format == "parquet":
            try:
                import pyarrow  # noqa: F401
            except ImportError:
                raise SalebotValidationError(
                    "LoadWebhookMessagesOperator: format 'parquet' needs pyarrow: pip install pyarrow"
                ) from None
        for name in ("source", "destination"):
            if not getattr(self, name) or not isinstance(getattr(self, name), (str, ObjectStoragePath)):
                raise SalebotValidationError(
                    f"LoadWebhookMessagesOperator: '{name}' must be a folder path or URI"
                )
        source, destination = ObjectStoragePath(self.source), ObjectStoragePath(self.destination)
        if not source.exists():
            raise SalebotError(f"LoadWebhookMessagesOperator: the source folder {source} does not exist")
        manifest_path = destination / MANIFEST
        manifest = json.loads(manifest_path.read_text()) if manifest_path.exists() else {}
        loaded: dict[str, Any] = manifest.get("loaded", {})
        recent: OrderedDict[str, None] = OrderedDict.fromkeys(manifest.get("recent_ids", []))
        totals = {"segments": 0, "messages": 0, "repeats": 0, "unreadable": 0}
        for relative, segment in self._segments(source):
            if relative in loaded:
                continue
            rows, repeats, unreadable = self._rows(segment, recent)
            target = destination / (relative.removesuffix(".jsonl") + "." + self.format)
            self._write(target, rows)
            for row in rows:
                recent[row["id"]] = None
                recent.move_to_end(row["id"])
            while len(recent) > RECENT_IDS:
                recent.popitem(last=False)
            loaded[relative] = {
                "messages": len(rows),
                "repeats": repeats,
                "unreadable": unreadable,
                "output": str(target),
                "at": dt.datetime.now(dt.timezone.utc).isoformat(),
            }
            self._save(manifest_path, {"loaded": loaded, "recent_ids": list(recent)})
            totals["segments"] += 1
            totals["messages"] += len(rows)
            totals["repeats"] += repeats
            totals["unreadable"] += unreadable
            self.log.info(
                "Salebot webhook: segment %s loaded: %d messages, %d repeats left out",
                relative,
                len(rows),
                repeats,
            )
            if unreadable:
                self.log.warning(
                    "Salebot webhook: %d unreadable lines in %s (kept there)", unreadable, segment
                )
        self.log.info(
            "Salebot webhook: %d segments loaded into %s (%d messages, %d repeats left out)",
            totals["segments"],
            destination,
            totals["messages"],
            totals["repeats"],
        )
        return {**totals, "destination": str(destination)}

    @staticmethod
    def _segments(source: Any) -> Iterator[tuple[str, Any]]:
        """``(relative name, path)`` of each closed segment, a receiver's in order, receivers by name."""
        entries = sorted(source.iterdir(), key=lambda p: p.name)
        found = [(int(m.group(1)), "", p) for p in entries if (m := _SEGMENT.match(p.name)) and p.is_file()]
        for folder in entries:
            if folder.is_dir():
                for p in folder.iterdir():
                    if (m := _SEGMENT.match(p.name)) and p.is_file():
                        found.append((int(m.group(1)), folder.name + "/", p))
        for _, prefix, path in sorted(found, key=lambda f: (f[1], f[0])):
            yield prefix + path.name, path

    def _rows(self, segment: Any, recent: OrderedDict[str, None]) -> tuple[list[dict[str, Any]], int, int]:
        rows, repeats, unreadable, here = [], 0, 0, set()
        with segment.open("rb") as lines:
            for raw in lines:
                try:
                    record = json.loads(raw)
                    message = record["message"]
                    message_id = str(message["id"])
                except (ValueError, KeyError, TypeError):
                    unreadable += 1
                    continue
                if message_id in recent or message_id in here:
                    repeats += 1
                    continue
                here.add(message_id)
                row = {column: message.get(column) for column in COLUMNS}
                row.update(
                    id=message_id, received_at=record.get("received_at"), receiver=record.get("receiver")
                )
                if not self.include_text:
                    row.update(dict.fromkeys(_PERSONAL))
                for column in _JSON_COLUMNS:
                    if row[column] is not None:
                        row[column] = json.dumps(row[column], ensure_ascii=False)
                if self.include_payload:
                    row["payload"] = json.dumps(record.get("payload"), ensure_ascii=False)
                rows.append(row)
        return rows, repeats, unreadable

    def _write(self, target: Any, rows: list[dict[str, Any]]) -> None:
        """Write the file under a temporary name, then move it into place."""
        if target.protocol in ("", "file", "local"):
            target.parent.mkdir(parents=True, exist_ok=True)
        part = target.parent / f".{target.name}.part"
        if self.format == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            columns = [*COLUMNS, *(["payload"] if self.include_payload else [])]
            table = pa.Table.from_pylist(rows, schema=_schema(pa, columns))
            with part.open("wb") as sink:
                pq.write_table(table, sink)
        else:
            with part.open("wb") as sink:
                for row in rows:
                    sink.write((json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8"))
        part.rename(target)

    @staticmethod
    def _save(path: Any, manifest: dict[str, Any]) -> None:
        part = path.parent / f".{path.name}.part"
        if path.protocol in ("", "file", "local"):
            path.parent.mkdir(parents=True, exist_ok=True)
        part.write_text(json.dumps(manifest))
        part.rename(path)


def _schema(pa: Any, columns: list[str]) -> Any:
    types = {
        "client_id": pa.int64(),
        "is_input": pa.bool_(),
        "message_id": pa.int64(),
        "project_id": pa.int64(),
        "delivered": pa.bool_(),
        "client_type": pa.int64(),
    }
    return pa.schema([(column, types.get(column, pa.string())) for column in columns])
