"""The progress of a chunked send, kept in ``task_state_store`` so that a retry never sends a chunk twice."""

from __future__ import annotations

import hashlib
import json
import logging
from typing import TYPE_CHECKING, Any

from salebot_provider.exceptions import SalebotError, SalebotValidationError

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from collections.abc import Mapping

RESUME_DOCS = "docs/operators.md#when-a-send-fails-part-way"


class Fingerprint:
    """
    A short digest of an input, fed piece by piece so that a large input is never held whole.

    :param head: the first pieces, e.g. the arguments that say what is sent.
    """

    def __init__(self, *head: Any) -> None:
        self._digest = hashlib.sha256()
        for part in head:
            self.add(part)

    def add(self, part: Any) -> None:
        """Feed one more piece (any JSON-able value)."""
        self._digest.update(json.dumps(part, sort_keys=True, default=str).encode())
        self._digest.update(b"\n")

    @property
    def digest(self) -> str:
        """The digest so far, as hex."""
        return self._digest.hexdigest()[:32]


class Ledger:
    """
    Which items of one input went out, were in doubt, or are still to send, across a task's tries.

    Items are counted by their place in the input (after duplicates are dropped), so the record is a
    cursor and a few counts, never a list of ids. Each chunk is recorded as in flight before it is
    sent and as done after, so a try that died between the two leaves it in doubt: never resent.
    Where Airflow gives no ``task_state_store`` (before 3.3, or a plain ``execute()`` call), the
    record lives only as long as the try.

    :param context: the task's context.
    :param action: the action, which names the record's key.
    :param digest: the input's fingerprint; a retry with a different one is refused.
    :param total: how many items the input has.
    """

    def __init__(self, context: Mapping[str, Any] | None, action: str, digest: str, total: int) -> None:
        self.action = action
        self.key = f"salebot_{action}"
        self.store = context.get("task_state_store") if context is not None else None
        saved = self.store.get(self.key) if self.store is not None else None
        nothing_sent = isinstance(saved, dict) and not any(
            saved.get(name) for name in ("cursor", "in_doubt", "in_flight")
        )
        if nothing_sent:
            saved = None  # earlier tries sent nothing (a definite refusal): start afresh
        if saved is not None and (
            not isinstance(saved, dict) or saved.get("fingerprint") != digest or saved.get("total") != total
        ):
            how_much = (
                "all" if isinstance(saved, dict) and saved.get("cursor") == saved.get("total") else "part"
            )
            raise SalebotValidationError(
                f"Salebot {action}: an earlier try of this task instance already sent {how_much} of a "
                f"different input (its fingerprint differs), so going on could message someone twice or "
                f"skip someone. Give it the same input, or run it in a new DAG run; see {RESUME_DOCS}",
                action=action,
            )
        self.resumed = saved is not None
        self.state: dict[str, Any] = {
            "fingerprint": digest,
            "total": total,
            "cursor": 0,
            "in_flight": None,
            "in_doubt": [],
            "requests": 0,
            "counts": {},
            **(saved or {}),
        }
        if self.resumed and self.cursor >= total and self.state["in_flight"] is None:
            log.warning(
                "Salebot %s: an earlier try of this task instance already tried every item of this "
                "input; nothing is sent again. To send it again, trigger a new DAG run.",
                action,
            )
        if self.state["in_flight"] is not None:
            # A try died between sending a chunk and recording its end: it may have gone out.
            self.state["in_doubt"].append(self.state["in_flight"])
            self.state["cursor"] = self.state["in_flight"][1]
            self.state["in_flight"] = None
            self.save()

    @property
    def durable(self) -> bool:
        """Whether the record survives the try (Airflow 3.3+ inside a task)."""
        return self.store is not None

    @property
    def total(self) -> int:
        """How many items the input has."""
        return int(self.state["total"])

    @property
    def cursor(self) -> int:
        """The place of the first item not yet tried."""
        return int(self.state["cursor"])

    @property
    def requests(self) -> int:
        """Requests made for this input, by every try."""
        return int(self.state["requests"])

    @property
    def in_doubt(self) -> list[tuple[int, int]]:
        """The ``[start, end)`` places of the chunks that may or may not have been processed."""
        return [(int(a), int(b)) for a, b in self.state["in_doubt"]]

    @property
    def doubtful(self) -> int:
        """How many items are in doubt."""
        return sum(b - a for a, b in self.in_doubt)

    def count(self, name: str) -> int:
        """A count kept with the record (e.g. ``sent``), over every try."""
        return int(self.state["counts"].get(name, 0))

    def get(self, name: str, default: Any = None) -> Any:
        """A small value kept with the record."""
        return self.state.get(name, default)

    def set(self, name: str, value: Any) -> None:
        """Keep a small value with the record (saved with the next change)."""
        self.state[name] = value

    def save(self) -> None:
        """Write the record where a retry finds it."""
        if self.store is not None:
            self.store.set(self.key, self.state)

    def begin(self, start: int, end: int) -> None:
        """Record the chunk ``[start, end)`` as in flight, before its request is sent."""
        self.state["in_flight"] = [start, end]
        self.state["requests"] += 1
        self.save()

    def done(self, end: int, **counts: int) -> None:
        """Record the chunk in flight as done, adding ``counts`` (e.g. ``sent=500``)."""
        for name, value in counts.items():
            self.state["counts"][name] = self.count(name) + value
        self.state["cursor"], self.state["in_flight"] = end, None
        self.save()

    def failed(self, in_doubt: bool) -> None:
        """Record the chunk in flight as failed: in doubt (never resent), or surely not processed."""
        chunk = self.state["in_flight"]
        if in_doubt:
            self.state["in_doubt"].append(chunk)
            self.state["cursor"] = chunk[1]
        self.state["in_flight"] = None
        self.save()

    def keep(self, start: int, value: Any) -> None:
        """Keep a chunk's small result (e.g. the ids of loaded clients) for a later try."""
        if self.store is not None:
            self.store.set(f"{self.key}:{start}", value)

    def kept(self, start: int) -> Any:
        """The result a try kept for the chunk starting at ``start``, if any."""
        return self.store.get(f"{self.key}:{start}") if self.store is not None else None

    def stopped(self, cause: SalebotError, account: str) -> Exception:
        """
        The error that ends a try which failed part-way, saying what went out and what did not.

        With a durable record an ordinary error lets Airflow's retry send the rest. Without one, a
        retry would send everything again, so once anything may have gone out the task fails for good
        (AirflowFailException) and the message says how to resume by hand.

        :param cause: the error of the failed request.
        :param account: what was sent, in doubt and not sent, in words.
        """
        text = f"Salebot {self.action} stopped part-way: {account}. Cause: {str(cause).rstrip('.')}"
        if self.durable:
            return SalebotError(
                f"{text}. A retry of this task sends only what was not sent; nothing that went out or "
                "is in doubt is ever resent.",
                action=self.action,
                in_doubt=bool(self.doubtful),
            )
        if not self.doubtful and not self.state["counts"]:
            return cause
        from airflow.providers.common.compat.sdk import AirflowFailException

        rest = " To finish, run the task with only what was not sent." if self.cursor < self.total else ""
        return AirflowFailException(
            f"{text}. This Airflow keeps no task state (task_state_store, 3.3+), so a retry would send "
            f"everything again: automatic retries are off for this failure.{rest} See {RESUME_DOCS}"
        )
