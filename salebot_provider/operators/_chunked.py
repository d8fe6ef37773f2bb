"""Ids sent in chunks through the Ledger: the loop shared by the operators whose sends take lists of ids."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Any

from salebot_provider.api import batched
from salebot_provider.operators._base import asked_to_stop, interrupted
from salebot_provider.operators._ledger import Fingerprint, Ledger
from salebot_provider.operators._sources import unique_ids

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

    from salebot_provider.operators._sources import Rows

#: The most in-doubt ids written into an error message (all of them go to the task log).
SHOWN_IDS = 20


class ChunkedIds:
    """
    One input of ids, sent in chunks so that no chunk goes out twice across the task's tries.

    The input is read twice as a stream: once to check every id, drop repeats (the first kept),
    count them and fingerprint them (:meth:`ledger`), and once to send (:meth:`send`). Each chunk is
    recorded in the :class:`~salebot_provider.operators._ledger.Ledger` as in flight before its
    request and as done after, so a retry sends only what surely never went out.

    :param action: the action sent; it names the progress record and the messages.
    :param rows: the input.
    :param kind: ``"id"`` for client ids, ``"key"`` for messenger ids.
    :param noun: one id in words, for messages, e.g. ``"client id"``.
    :param items: what the counts count, for messages, e.g. ``"clients"`` or ``"recipients"``.
    """

    def __init__(
        self, action: str, rows: Rows, *, kind: str = "id", noun: str = "client id", items: str = "clients"
    ) -> None:
        self.action, self.rows, self.kind, self.noun, self.items = action, rows, kind, noun, items

    def ids(self) -> Iterator[Any]:
        """The checked ids, each once, in input order."""
        return (value for _, value in unique_ids(self.rows, self.kind))

    def ledger(self, context: Mapping[str, Any] | None, fingerprint: Fingerprint) -> Ledger:
        """
        Check and count every id (nothing is sent if one is bad); the progress record of this input.

        :param context: the task's context (its ``task_state_store`` keeps the record).
        :param fingerprint: the fingerprint of what is sent besides the ids, e.g. the list; the ids
            are fed to it here.
        """
        total = 0
        for value in self.ids():
            fingerprint.add(value)
            total += 1
        return Ledger(context, self.action, fingerprint.digest, total)

    def send(
        self,
        log: Any,
        ledger: Ledger,
        size: int,
        call: Callable[[list[Any]], object],
        secret: str | None,
        stop: Callable[[], bool] = lambda: False,
    ) -> None:
        """
        Send the ids the ledger has not tried yet, ``size`` per request; on a failure, stop and say what.

        :param log: the task's logger.
        :param ledger: the record from :meth:`ledger`.
        :param size: ids per request.
        :param call: sends one chunk; it raises when the request failed.
        :param secret: the API key, removed from the text of an unexpected error.
        :param stop: whether the task was told to stop (``on_kill``): then no further chunk starts.
        :raises Exception: :meth:`Ledger.stopped`'s error, naming what went out, is in doubt and was not sent.
        """
        from salebot_provider.hooks.salebot import Progress

        start = ledger.cursor
        if ledger.resumed:
            log.warning(
                "Salebot %s: an earlier try of this task instance sent %s and left %s in doubt (never "
                "resent); %s to send now",
                self.action,
                f"{ledger.count('sent'):,}",
                f"{ledger.doubtful:,}",
                f"{ledger.total - start:,}",
            )
        progress = Progress(log, f"Salebot {self.action}: {self.items}", ledger.total)
        progress.done = start
        pending = itertools.islice(self.ids(), start, None)
        for chunk in batched(pending, size):
            end = start + len(chunk)
            ledger.begin(start, end)
            try:
                call(chunk)
            except BaseException as exc:
                error = interrupted(self.action, exc, secret)
                ledger.failed(error.in_doubt)
                if error.in_doubt:
                    log.warning(
                        "Salebot %s: %ss in doubt (not resent): %s",
                        self.action,
                        self.noun,
                        ", ".join(map(str, chunk)),
                    )
                first = chunk[0] if not error.in_doubt else next(pending, None)
                if ledger.durable and not isinstance(exc, Exception):
                    raise  # a task timeout or a kill: the record holds the chunk in doubt
                account = self._account(ledger, chunk if error.in_doubt else [], first)
                raise ledger.stopped(error, account) from None
            ledger.done(end, sent=len(chunk))
            progress.add(len(chunk))
            start = end
            if stop() and start < ledger.total:
                account = self._account(ledger, [], next(pending, None))
                raise ledger.stopped(asked_to_stop(self.action), account)
        log.info(
            "Salebot %s: %s of %s %s sent in %s requests",
            self.action,
            f"{ledger.count('sent'):,}",
            f"{ledger.total:,}",
            self.items,
            ledger.requests,
        )

    def _account(self, ledger: Ledger, doubtful: list[Any], first_unsent: Any) -> str:
        not_sent = ledger.total - ledger.cursor
        text = (
            f"{ledger.count('sent'):,} {self.items} sent, {ledger.doubtful:,} in doubt (it may have been "
            f"processed; not resent), {not_sent:,} not sent"
        )
        if doubtful:
            more = ", ..." if len(doubtful) > SHOWN_IDS else ""
            text += f"; in doubt now: {', '.join(map(str, doubtful[:SHOWN_IDS]))}{more} (all in the log)"
        if first_unsent is not None and not_sent:
            text += (
                f"; the first not sent is {self.noun} {first_unsent}, number {ledger.cursor + 1:,} of the "
                "input counting each id once"
            )
        return text

    def in_doubt(self, log: Any, ledger: Ledger) -> Exception:
        """
        The failure that ends a send whose every chunk was tried, some of them in doubt, naming them.

        :param log: the task's logger, which gets every in-doubt id.
        :param ledger: the record.
        """
        from airflow.providers.common.compat.sdk import AirflowFailException

        ids = [
            value for place, value in enumerate(self.ids()) if any(a <= place < b for a, b in ledger.in_doubt)
        ]
        log.warning("Salebot %s: %ss in doubt: %s", self.action, self.noun, ", ".join(map(str, ids)))
        shown = ", ".join(map(str, ids[:SHOWN_IDS])) + (", ..." if len(ids) > SHOWN_IDS else "")
        return AirflowFailException(
            f"Salebot {self.action}: every {self.noun} was tried: {ledger.count('sent'):,} sent, "
            f"{len(ids):,} in doubt (a request failed after it may have been processed; they were not "
            f"resent). Check them in Salebot: {self.noun}s {shown} (all listed in the task log)."
        )
