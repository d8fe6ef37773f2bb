"""ExportClientsOperator: every client (optionally with its variables) streamed to a JSON Lines file."""

from __future__ import annotations

import json
import os
import uuid
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

from salebot_provider.api import check_param, reply_field
from salebot_provider.exceptions import (
    SalebotAPIError,
    SalebotError,
    SalebotNotFoundError,
    SalebotValidationError,
)
from salebot_provider.operators._base import SalebotOperator, check_count, check_flag, is_literal
from salebot_provider.operators._sources import output_path

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from airflow.providers.common.compat.sdk import Context

#: The most concurrent get_variables requests: the hook's connection pool keeps 16
#: (``transport.POOL_SIZE``).
MAX_WORKERS = 16


def _asset_uri(path: Any) -> str | None:
    """
    The URI of the outlet Asset for a destination; None for a relative local path, which no URI names.

    Airflow reads ``file://`` URIs with the path after ``//``, so a file needs an absolute path
    (``file:///data/clients.jsonl``); a connection id in a URI (``s3://aws_conn@bucket/key``) is not
    part of the data's name and is left out.
    """
    if isinstance(path, str) and "://" in path:
        parts = urlsplit(path)
        if parts.scheme.lower() == "file" and parts.netloc:
            raise SalebotValidationError(
                f"Salebot export_clients: 'path' {path!r} is a file:// URI of a relative path; give an "
                "absolute one (file:///data/clients.jsonl) or a plain local path",
                action="export_clients",
            )
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    if isinstance(path, str | os.PathLike):
        local = os.fspath(path)
        return f"file://{local}" if isinstance(local, str) and os.path.isabs(local) else None
    return f"{path.protocol}://{path.path}"  # an ObjectStoragePath: its conn_id left out


class ExportClientsOperator(SalebotOperator):
    """
    Write every client of the project (or of one list) to a JSON Lines file, one client per line.

    Clients are read page by page (``get_clients``, 500 a page) and written as they come, so memory
    stays flat however many there are. Each line is the client as ``get_clients`` lists it; with
    ``with_variables=True`` it also has ``variables`` (the client's) and ``order_variables`` (its
    current deal's) from ``get_variables``, fetched ``max_workers`` at a time within the connection's
    ``rate_limit``, while the lines keep the order of the clients: at most ``2 * max_workers``
    clients wait for their variables at any moment. Every request is a read, retried by the hook.

    The file is written under a temporary name beside ``path`` (``.<name>.<random>.part``) and moved
    into place only when every client is in it: a task that fails part-way leaves no file at
    ``path`` (an earlier export there stays as it was), and removes the temporary one. On object
    storage the move is a copy; the folder of a local ``path`` must exist.

    ``path`` is declared as an outlet ``Asset``, so a DAG can be scheduled on the export, when it is
    known as the DAG file is parsed: a URI (``s3://crm/clients.jsonl``, ``file:///data/clients.jsonl``:
    a ``file://`` URI needs an absolute path), an absolute local path (as ``file://...``) or an
    ``ObjectStoragePath``. For a templated or relative ``path``, give ``outlets`` yourself; ``outlets``
    given are used as they are.

    .. code-block:: python

        ExportClientsOperator(task_id="export", path="s3://crm/salebot/clients.jsonl", with_variables=True)

    :param path: where to write: a local path, a URI or an ``ObjectStoragePath``. (templated)
    :param list_id: only the clients of this list. (templated)
    :param with_variables: also fetch each client's variables (one request per client). (templated)
    :param max_workers: ``get_variables`` requests at a time, 1 to 16 (default 4). (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: ``{"clients": N, "path": path}``.
    """

    template_fields: Sequence[str] = ("list_id", "path", "with_variables", "max_workers")

    def __init__(
        self,
        *,
        path: Any,
        list_id: int | str | None = None,
        with_variables: bool = False,
        max_workers: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.path = path
        self.list_id = list_id
        self.with_variables = with_variables
        self.max_workers = max_workers
        # Literal mistakes show when the DAG file is parsed; the task checks everything again.
        if list_id is not None and is_literal(list_id):
            check_param("get_clients", "id", "list_id", list_id)
        if is_literal(with_variables):
            check_flag("export_clients", "with_variables", with_variables)
        if is_literal(max_workers):
            check_count("export_clients", "max_workers", max_workers, 4, MAX_WORKERS)
        if is_literal(path):
            uri = _asset_uri(path)
            if uri is not None and not self.outlets:
                from airflow.providers.common.compat.sdk import Asset

                self.outlets = [Asset(uri)]

    def execute(self, context: Context) -> dict[str, Any]:
        """Stream the clients to a temporary file beside ``path``, then move it there."""
        with_variables = check_flag("export_clients", "with_variables", self.with_variables)
        workers = check_count("export_clients", "max_workers", self.max_workers, 4, MAX_WORKERS)
        list_id = (
            None if self.list_id in (None, "") else check_param("get_clients", "id", "list_id", self.list_id)
        )
        _asset_uri(self.path)  # refuses a relative file:// URI
        target = output_path(self.path)
        clients: Iterable[Any] = self.hook.iter_clients(list_id=list_id)
        if with_variables:
            clients = self._with_variables(clients, workers)
        part = target.parent / f".{target.name}.{uuid.uuid4().hex[:8]}.part"
        count = 0
        try:
            with part.open("w", encoding="utf-8") as out:
                for client in clients:
                    out.write(json.dumps(client, ensure_ascii=False) + "\n")
                    count += 1
            part.replace(target)
        except BaseException as exc:
            if part.exists():
                part.unlink()
            if isinstance(exc, SalebotError):
                # The same error, its class kept (SalebotPermissionError ...), saying how far it got.
                exc.args = (
                    f"Salebot export stopped after {count:,} clients; nothing was written to "
                    f"{self.path}. Cause: {exc}",
                )
            raise
        self.log.info("Salebot export: %s clients written to %s", f"{count:,}", self.path)
        return {"clients": count, "path": str(self.path)}

    def _with_variables(self, clients: Iterable[Any], workers: int) -> Iterator[dict[str, Any]]:
        """Each client with its variables, in input order, with at most ``2 * workers`` requests ahead."""
        with ThreadPoolExecutor(workers, thread_name_prefix="salebot-export") as pool:
            window: deque[tuple[dict[str, Any], Future[Any]]] = deque()
            try:
                for client in clients:
                    if not isinstance(client, dict) or client.get("id") is None:
                        raise SalebotAPIError(
                            f"Salebot get_clients listed a client without an id: {client!r:.60}",
                            action="get_clients",
                        )
                    window.append((client, pool.submit(self.hook.get_variables, client["id"])))
                    if len(window) >= 2 * workers:
                        yield _with(*window.popleft())
                while window:
                    yield _with(*window.popleft())
            finally:
                for _, future in window:
                    future.cancel()


def _with(client: dict[str, Any], reply: Future[Any]) -> dict[str, Any]:
    """
    A client's line: the client and its variables, from a ``get_variables`` reply of the right shape.

    A client deleted since its page was read has no variables to fetch: its line says so
    (``"deleted": true``) rather than one client ending a long export.
    """
    try:
        reply.result()
    except SalebotNotFoundError:
        return {**client, "variables": None, "order_variables": None, "deleted": True}
    variables = reply_field("get_variables", reply.result(), "variables")
    order_variables = reply.result().get("order_variables")
    if not isinstance(variables, dict) or not isinstance(order_variables, dict | None):
        raise SalebotAPIError(
            f"Salebot get_variables replied for client {client['id']} without a 'variables' object",
            action="get_variables",
        )
    return {**client, "variables": variables, "order_variables": order_variables}
