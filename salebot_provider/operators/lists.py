"""AddToListOperator and RemoveFromListOperator: put clients in a Salebot list or take them out, in chunks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from salebot_provider.api import check_param
from salebot_provider.operators._base import SalebotOperator, check_count, is_literal
from salebot_provider.operators._chunked import ChunkedIds
from salebot_provider.operators._ledger import Fingerprint
from salebot_provider.operators._sources import Rows

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

#: Client ids per request. Salebot documents no limit for the list actions; 500 is the limit it
#: documents for its other client id lists (delete_clients), and a failed request leaves at most
#: one chunk in doubt.
DEFAULT_CHUNK_SIZE = 500


class _ListOperator(SalebotOperator):
    """
    Base of the two list operators: a list, client ids in chunks, each chunk sent at most once.

    :param list_id: the Salebot list. (templated)
    :param clients: client ids: a list, a JSON list, or a file's path or URI. (templated)
    :param chunk_size: client ids per request (default 500, at most 5,000). (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    """

    #: The action: ``add_to_list`` or ``remove_from_list``.
    action: ClassVar[str]

    template_fields: Sequence[str] = ("list_id", "clients", "chunk_size")
    template_fields_renderers: ClassVar[dict[str, str]] = {"clients": "py"}

    def __init__(
        self,
        *,
        list_id: int | str,
        clients: Any,
        chunk_size: int = DEFAULT_CHUNK_SIZE,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.list_id = list_id
        self.clients = clients
        self.chunk_size = chunk_size
        # Literal mistakes show when the DAG file is parsed; the task checks everything again.
        if is_literal(list_id):
            check_param(self.action, "id", "list_id", list_id)
        if is_literal(chunk_size):
            check_count(self.action, "chunk_size", chunk_size, DEFAULT_CHUNK_SIZE)
        if isinstance(clients, list | tuple) and is_literal(clients):
            sum(1 for _ in self._ids().ids())

    def _ids(self) -> ChunkedIds:
        return ChunkedIds(self.action, Rows(self.action, "clients", self.clients, column="client_id"))

    def execute(self, context: Context) -> dict[str, Any]:
        """Check every id, then send them in chunks; see the class docstring."""
        list_id = int(check_param(self.action, "id", "list_id", self.list_id))
        size = check_count(self.action, "chunk_size", self.chunk_size, DEFAULT_CHUNK_SIZE)
        ids = self._ids()
        ledger = ids.ledger(context, Fingerprint(self.action, list_id))
        if ledger.total == 0:
            self.log.warning("Salebot %s: 'clients' holds no ids; nothing is sent", self.action)
        else:
            secret = self.hook.settings.api_key  # the connection is read before anything is sent
            send = getattr(self.hook, self.action)
            ids.send(
                self.log, ledger, size, lambda chunk: send(list_id, chunk), secret, lambda: self.stop_asked
            )
        if ledger.in_doubt:
            raise ids.in_doubt(self.log, ledger)
        return {"list_id": list_id, "clients": ledger.total, "requests": ledger.requests}


class AddToListOperator(_ListOperator):
    """
    Add clients to a Salebot list (``add_to_list``), in chunks.

    ``clients`` takes a list (or an XCom), or the path or URI of a file read as a stream: one id per
    line, or JSON Lines / CSV with a ``client_id`` column, exactly as
    :class:`~salebot_provider.operators.BroadcastOperator` reads it. Every id is checked before the
    first request; a repeated id is dropped (the first kept). No ids, no request.

    ``add_to_list`` is a send: a request is never repeated once it may have been processed (a
    timeout or a 5xx after it went out). If a request fails part-way the task fails saying how many
    ids were sent, are in doubt and were not sent; on Airflow 3.3+ the progress is kept in the task's
    ``task_state_store``, so a retry (or a clear) sends only the rest and never a chunk that went out
    or may have, and the try that has sent everything else fails naming the ids in doubt. Without
    ``task_state_store`` a part-sent task fails for good (``AirflowFailException``).

    .. code-block:: python

        AddToListOperator(task_id="tag_vip", list_id=1170282, clients="s3://crm/vip/{{ ds }}.csv")

    :param list_id: the Salebot list. (templated)
    :param clients: client ids: a list, a JSON list, or a file's path or URI. (templated)
    :param chunk_size: client ids per request (default 500, at most 5,000). (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: ``{"list_id": ..., "clients": N, "requests": k}``: the ids counted once each, and the
        requests of every try.
    """

    action = "add_to_list"


class RemoveFromListOperator(_ListOperator):
    """
    Remove clients from a Salebot list (``remove_from_list``), in chunks.

    ``clients`` is read, checked and sent exactly as by :class:`AddToListOperator`, with the same
    behaviour when a request fails part-way (a send: never repeated once it may have been
    processed; the progress kept in ``task_state_store`` on Airflow 3.3+).

    .. code-block:: python

        RemoveFromListOperator(task_id="untag", list_id=1170282, clients=find.output["client_ids"])

    :param list_id: the Salebot list. (templated)
    :param clients: client ids: a list, a JSON list, or a file's path or URI. (templated)
    :param chunk_size: client ids per request (default 500, at most 5,000). (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: ``{"list_id": ..., "clients": N, "requests": k}``: the ids counted once each, and the
        requests of every try.
    """

    action = "remove_from_list"
