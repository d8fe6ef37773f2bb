"""SaveVariablesOperator: write client or deal variables, the same for many clients or per client."""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping
from concurrent.futures import ALL_COMPLETED, FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from typing import TYPE_CHECKING, Any, ClassVar

from salebot_provider.api import batched, check_param, validate
from salebot_provider.exceptions import SalebotError, SalebotValidationError
from salebot_provider.operators._base import SalebotOperator, check_count, is_literal
from salebot_provider.operators._sources import Rows, unique_ids

if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator, Sequence

    from airflow.providers.common.compat.sdk import Context

#: Rows read per round of the per-client mode: within a round, clients with identical variables
#: become one request, and a client given twice has its rows merged (the later value wins). Rounds
#: run one after another, so memory is bounded whatever the input's size (about 50 MB a round: a
#: client id and a shared reference to its set of values per row).
ROUND = 250_000
#: The most concurrent requests: the hook's connection pool keeps 16
#: (``transport.POOL_SIZE``).
MAX_WORKERS = 16


def _value(where: str, name: Any, value: Any) -> Any:
    """A variable's value: a string, a number, true/false or null; named by client and variable."""
    if not isinstance(name, str) or not name.strip():
        raise SalebotValidationError(
            f"Salebot save_variables: {where} has a variable name that is not a non-empty string: "
            f"{name!r:.60}",
            action="save_variables",
        )
    if value is None or isinstance(value, str | bool):
        return value
    if isinstance(value, int | float):
        return check_param("save_variables", "number", f"{where}, variable {name!r}", value)
    raise SalebotValidationError(
        f"Salebot save_variables: {where}, variable {name!r} must be a string, a number, true/false or "
        f"null; got a {type(value).__name__}",
        action="save_variables",
    )


class SaveVariablesOperator(SalebotOperator):
    """
    Save variables in Salebot: the same ones for one or many clients, or each client's own.

    Three modes, exactly one:

    - ``variables`` + ``client_id``: one request;
    - ``variables`` + ``clients``: the same variables for many clients (a list, an XCom, or a file
      of ids as :class:`~salebot_provider.operators.BroadcastOperator` reads them), in chunks;
    - ``client_variables``: each client's own values, as a mapping ``client id -> {name: value}``, a
      list of ``{"client_id", "variables"}``, or the path or URI of a JSON Lines file (``client_id``
      and the variables as keys, or ``client_id`` and ``variables``) or a CSV file (a ``client_id``
      column, the other columns are variables; an empty cell is not written), read as a stream, so a
      nightly sync of a million rows never passes through an XCom. Clients with identical variables
      are grouped into one request, and the requests run ``max_workers`` at a time (within the
      connection's ``rate_limit``): save_variables has no vendor quota.

    A name with the ``client.`` prefix (``client.phone``) writes the client's profile; any other
    name writes the client's current deal, as Salebot does. Values are strings, numbers, true/false
    or null; anything else is refused before the first request, naming the client and the variable.
    save_variables is idempotent: a failed request is retried, and a retry of the task writes the
    same values again, harmlessly.

    .. code-block:: python

        SaveVariablesOperator(
            task_id="write_scores",
            client_variables="s3://crm/scores/{{ ds }}.csv",  # client_id,client.score,client.tier
        )

    :param variables: name -> value, for ``client_id`` or ``clients``. (templated)
    :param client_id: one client. (templated)
    :param clients: many clients: a list, a JSON list, or a file's path or URI. (templated)
    :param client_variables: per-client values, as above. (templated)
    :param chunk_size: clients per request when many share the variables (default 500). (templated)
    :param max_workers: requests at a time, 1 to 16 (default 4). (templated)
    :param salebot_conn_id: the Airflow connection of type ``salebot``.
    :return: ``{"clients": N, "requests": k}``.
    """

    template_fields: Sequence[str] = (
        "variables",
        "client_id",
        "clients",
        "client_variables",
        "chunk_size",
        "max_workers",
    )
    template_fields_renderers: ClassVar[dict[str, str]] = {
        "variables": "json",
        "clients": "py",
        "client_variables": "py",
    }

    def __init__(
        self,
        *,
        variables: Mapping[str, Any] | None = None,
        client_id: int | str | None = None,
        clients: Any = None,
        client_variables: Any = None,
        chunk_size: int = 500,
        max_workers: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.variables = variables
        self.client_id = client_id
        self.clients = clients
        self.client_variables = client_variables
        self.chunk_size = chunk_size
        self.max_workers = max_workers
        self._check(parsing=True)

    def _check(self, *, parsing: bool = False) -> tuple[int, int]:
        """
        Check which arguments are given and the values known so far; return chunk size and workers.

        While the DAG file is parsed, values from a template or an XCom, and files, are left for
        the task to check.
        """
        given = [n for n in ("client_id", "clients", "client_variables") if getattr(self, n) is not None]
        if len(given) != 1 or (given == ["client_variables"]) == (self.variables is not None):
            raise SalebotValidationError(
                "Salebot save_variables: give 'variables' with 'client_id' or with 'clients', or "
                f"'client_variables' alone; got {', '.join(given + ['variables'] * bool(self.variables))}",
                action="save_variables",
            )
        size = workers = 0
        if not parsing or is_literal(self.chunk_size):
            size = check_count("save_variables", "chunk_size", self.chunk_size, 500)
        if not parsing or is_literal(self.max_workers):
            workers = check_count("save_variables", "max_workers", self.max_workers, 4, MAX_WORKERS)
        if parsing and self.variables is not None and is_literal(self.variables):
            self._checked(f"client {self.client_id}" if self.client_id else "clients", self.variables)
        if parsing and isinstance(self.clients, list | tuple) and is_literal(self.clients):
            for _ in unique_ids(Rows("save_variables", "clients", self.clients, column="client_id"), "id"):
                pass  # a mistake in a literal list shows when the DAG file is parsed
        if parsing and self.client_id is not None and is_literal(self.client_id):
            check_param("save_variables", "id", "client_id", self.client_id)
        if (
            parsing
            and isinstance(self.client_variables, Mapping | list)
            and is_literal(self.client_variables)
        ):
            sum(1 for _ in self._per_client())
        return size, workers

    def execute(self, context: Context) -> dict[str, Any]:
        """Check everything, then write; see the class docstring."""
        size, workers = self._check()
        if self.client_id is not None:
            variables = self._checked(f"client {self.client_id}", self.variables)
            validate("save_variables", {"client_id": self.client_id, "variables": variables})
            self.hook.save_variables(variables, client_id=self.client_id)
            return {"clients": 1, "requests": 1}
        if self.clients is not None:
            variables = self._checked("clients", self.variables)
            rows = Rows("save_variables", "clients", self.clients, column="client_id")
            total = sum(1 for _ in unique_ids(rows, "id"))
            ids = (value for _, value in unique_ids(rows, "id"))
            requests = ((variables, chunk) for chunk in batched(ids, size))
            return self._run(requests, workers, total)
        source = self._per_client()
        # Reading it all once checks every row before the first request, and counts the clients.
        total = sum(len(request[1]) for request in self._grouped(source, size) if request is not None)
        return self._run(self._grouped(source, size), workers, total)

    def _checked(self, where: str, variables: Any) -> dict[str, Any]:
        if not isinstance(variables, Mapping) or not variables:
            raise SalebotValidationError(
                f"Salebot save_variables: 'variables' must be a non-empty mapping of names to values; "
                f"got {variables!r:.60}",
                action="save_variables",
            )
        return {name: _value(where, name, value) for name, value in variables.items()}

    def _per_client(self) -> _PerClient:
        rows = Rows(
            "save_variables", "client_variables", self.client_variables, keyed=("client_id", "variables")
        )
        return _PerClient(rows, self._checked)

    def _grouped(self, source: Iterable[tuple[Any, dict[str, Any]]], size: int) -> Iterator[Any]:
        """Requests of one round after another: clients with identical variables in one request."""
        rows = iter(source)
        while True:
            # Each client keeps only the JSON of its values, one string shared by every client with
            # the same values, so a round costs a client id and a reference per row.
            sets: dict[str, str] = {}
            merged: dict[str, tuple[Any, str]] = {}
            for client_id, variables in itertools.islice(rows, ROUND):
                earlier = merged.get(str(client_id))
                values = {**json.loads(earlier[1]), **variables} if earlier else variables
                key = json.dumps(values, sort_keys=True)
                merged[str(client_id)] = (client_id, sets.setdefault(key, key))
            if not merged:
                return
            groups: dict[str, list[Any]] = {}
            for client_id, key in merged.values():
                groups.setdefault(key, []).append(client_id)
            del merged
            for key, ids in groups.items():
                for chunk in batched(ids, size):
                    yield json.loads(key), chunk
            yield None  # the round's end: its requests finish before the next round's begin

    def _run(self, requests: Iterable[Any], workers: int, total: int) -> dict[str, Any]:
        """Send the requests ``workers`` at a time; on a failure, stop and say what was written."""
        from salebot_provider.hooks.salebot import Progress

        progress = Progress(self.log, "Salebot save_variables: clients", total)
        made = 0
        failure: tuple[SalebotError, list[Any]] | None = None
        with ThreadPoolExecutor(workers, thread_name_prefix="salebot-save-variables") as pool:
            running: dict[Future[Any], list[Any]] = {}
            for request in itertools.chain(requests, [None]):
                if request is not None:
                    variables, chunk = request
                    running[self._submit(pool, variables, chunk)] = chunk
                    made += 1
                if request is None or len(running) >= 2 * workers:
                    done, _ = wait(running, return_when=FIRST_COMPLETED if request else ALL_COMPLETED)
                    for future in done:
                        chunk = running.pop(future)
                        error = future.exception()
                        if error is None:
                            progress.add(len(chunk))
                        elif failure is None and isinstance(error, SalebotError):
                            failure = (error, chunk)
                        elif failure is None:
                            raise error
                if failure is not None:
                    wait(running)
                    for future in running:
                        if future.exception() is None:
                            progress.add(len(running[future]))
                    break
        if failure is not None:
            error, chunk = failure
            raise SalebotError(
                f"Salebot save_variables stopped: {progress.done:,} of {total:,} clients written; a request "
                f"for {len(chunk):,} clients (first {chunk[0]}) failed, the rest were not tried. "
                f"save_variables is idempotent, so a retry writes everything again, harmlessly. "
                f"Cause: {error}",
                action="save_variables",
            ) from None
        self.log.info("Salebot save_variables: %s clients written in %s requests", f"{progress.done:,}", made)
        return {"clients": progress.done, "requests": made}

    def _submit(self, pool: ThreadPoolExecutor, variables: dict[str, Any], chunk: list[Any]) -> Future[Any]:
        if len(chunk) == 1:
            return pool.submit(self.hook.save_variables, variables, client_id=chunk[0])
        return pool.submit(self.hook.save_variables, variables, clients=chunk)


class _PerClient:
    """The per-client input, read again on each iteration: ``(client_id, variables)`` per row."""

    def __init__(self, rows: Rows, checked: Any) -> None:
        self.rows, self.checked = rows, checked

    def __iter__(self) -> Iterator[tuple[Any, dict[str, Any]]]:
        csv = self.rows.suffix == ".csv"
        for where, row in self.rows:
            if not isinstance(row, Mapping) or "client_id" not in row:
                raise self.rows.error(f"{where} must be an object with 'client_id'; got {row!r:.60}")
            client_id = check_param("save_variables", "id", f"{where}.client_id", row["client_id"])
            if set(row) == {"client_id", "variables"} and isinstance(row["variables"], Mapping):
                variables = row["variables"]
            else:
                variables = {k: v for k, v in row.items() if k != "client_id" and not (csv and v == "")}
            if not variables:
                continue
            yield client_id, self.checked(f"{where} (client {client_id})", variables)
