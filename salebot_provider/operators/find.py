"""FindClientsOperator: the ids of the clients whose variables match conditions, for the next task."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from salebot_provider.api import parse_rendered, reply_field, validate
from salebot_provider.exceptions import SalebotAPIError, SalebotValidationError
from salebot_provider.operators._base import SalebotOperator, check_flag, is_literal
from salebot_provider.operators._sources import output_path

if TYPE_CHECKING:
    from collections.abc import Sequence

    from airflow.providers.common.compat.sdk import Context

#: The most client ids returned in the XCom; more go to ``output_path``.
MAX_XCOM_IDS = 10_000
#: What a condition given as a mapping may hold (the vendor's operators).
CONDITION_KEYS = ("_in", "_not_in", "_not")


def _check_q(q: Any) -> dict[str, Any]:
    """The conditions: a non-empty mapping; each a value, or a mapping of ``_in``, ``_not_in``, ``_not``."""
    if isinstance(q, str):
        try:
            q = parse_rendered(q)
        except ValueError:
            raise SalebotValidationError(
                "Salebot find_clients: 'q' is text that is neither a JSON object nor a Python literal",
                action="find_clients",
            ) from None
    validate("find_clients", {"q": q})
    for name, condition in q.items():
        if not isinstance(condition, Mapping):
            continue
        unknown = sorted(set(condition) - set(CONDITION_KEYS))
        if not condition or unknown:
            raise SalebotValidationError(
                f"Salebot find_clients: q[{name!r}] as a mapping takes {', '.join(CONDITION_KEYS)}; "
                f"got {', '.join(map(str, unknown)) or 'none'}",
                action="find_clients",
            )
        for key in ("_in", "_not_in"):
            if key in condition and not isinstance(condition[key], list | tuple):
                raise SalebotValidationError(
                    f"Salebot find_clients: q[{name!r}][{key!r}] must be a list of values",
                    action="find_clients",
                )
    return dict(q)


def _found(reply: Any) -> list[Any]:
    """The ids in a reply, each once in the order given; a reply of another shape is an API error."""
    ids = reply_field("find_clients", reply, "client_ids")
    if not isinstance(ids, list):
        raise SalebotAPIError(
            f"Salebot find_clients replied without a 'client_ids' list (got {type(ids).__name__})",
            action="find_clients",
        )
    for index, value in enumerate(ids):
        if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit():
            raise SalebotAPIError(
                f"Salebot find_clients replied with client_ids[{index}] that is not an id: {value!r:.40}",
                action="find_clients",
            )
    # A search of deal variables may name a client once per matching deal.
    return list(dict.fromkeys(int(value) for value in ids))


class FindClientsOperator(SalebotOperator):
    """
    Find the clients whose variables match conditions (``find_clients``) and hand their ids on.

    ``q`` maps variable names to conditions: a value (equal), or a mapping with ``_in`` (one of a
    list), ``_not_in`` (none of a list) and/or ``_not`` (not equal), e.g.
    ``{"city": "Москва", "segment": {"_in": ["vip", "regular"]}}``. ``include_all=False`` finds the
    clients matching any one condition instead of all. ``search_in="order"`` searches the variables
    of deals instead of clients'. Salebot compares numbers only when every client's variable holds a
    number.

    The task's XCom is the list of ids, up to 10,000, so ``find.output`` feeds
    :class:`~salebot_provider.operators.BroadcastOperator`'s ``clients`` or a mapped task
    (``.expand(client_id=find.output)``); the count is pushed as the XCom ``count``. With
    ``output_path`` the ids are also written there, one id per line (a ``.csv`` gets a ``client_id``
    header), a file ``BroadcastOperator`` reads. More than 10,000 ids need ``output_path``, and the
    XCom is then that path, which ``BroadcastOperator(clients=find.output)`` reads just as well. The
    count is known only after the search, so without ``output_path`` the task fails then
    (``AirflowFailException``: a retry would find as many). The search is a read: the hook retries
    it on timeouts, 429 and 5xx.

    .. code-block:: python

        find = FindClientsOperator(task_id="find", q={"segment": "vip", "city": {"_not": "Казань"}})
        BroadcastOperator(task_id="announce", clients=find.output, message="Hi")

    :param q: the conditions, as above; a JSON object as text works too. (templated)
    :param search_in: ``"order"`` to search deal variables; None (the default) for client variables.
        (templated)
    :param include_all: True (the default): every condition must hold; False: any one. (templated)
    :param output_path: where to write the ids, one per line: a local path, a URI or an
        ``ObjectStoragePath``. Required for more than 10,000 ids. (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: the ids found, in a list; over 10,000, ``output_path`` instead.
    """

    template_fields: Sequence[str] = ("q", "search_in", "include_all", "output_path")
    template_fields_renderers: ClassVar[dict[str, str]] = {"q": "json"}

    def __init__(
        self,
        *,
        q: Any,
        search_in: str | None = None,
        include_all: bool = True,
        output_path: Any = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.q = q
        self.search_in = search_in
        self.include_all = include_all
        self.output_path = output_path
        # Literal mistakes show when the DAG file is parsed; the task checks everything again.
        if is_literal(q):
            _check_q(q)
        if is_literal(search_in):
            validate("find_clients", {"search_in": search_in or None}, omit="q")
        if is_literal(include_all):
            check_flag("find_clients", "include_all", include_all)

    def execute(self, context: Context) -> list[Any] | str:
        """Search, then hand the ids on; see the class docstring."""
        q = _check_q(self.q)
        include_all = check_flag("find_clients", "include_all", self.include_all)
        search_in = self.search_in or None  # a template of an unset param renders as ""
        validate("find_clients", {"q": q, "search_in": search_in, "include_all": include_all})
        ids = _found(self.hook.find_clients(q, search_in=search_in, include_all=include_all))
        self.log.info("Salebot find_clients: %s clients found", f"{len(ids):,}")
        destination = self.output_path or None  # a template of an unset param renders as ""
        if len(ids) > MAX_XCOM_IDS and destination is None:
            from airflow.providers.common.compat.sdk import AirflowFailException

            raise AirflowFailException(
                f"Salebot find_clients: {len(ids):,} clients found, more than the {MAX_XCOM_IDS:,} ids an "
                "XCom should carry; give 'output_path' (a file or URI) for the ids. A retry without it "
                "would find as many, so the task is not retried."
            )
        if destination is not None:
            self._write(destination, ids)
        if context.get("ti") is not None:
            context["ti"].xcom_push(key="count", value=len(ids))
        return ids if len(ids) <= MAX_XCOM_IDS else str(destination)

    def _write(self, destination: Any, ids: list[Any]) -> None:
        path = output_path(destination)
        # One id per line is also valid JSON Lines; a CSV file needs its header.
        header = "client_id\n" if str(path.suffix).lower() == ".csv" else ""
        with path.open("w", encoding="utf-8") as out:
            out.write(header)
            out.writelines(f"{client_id}\n" for client_id in ids)
        self.log.info("Salebot find_clients: the ids are in %s", self.output_path)
