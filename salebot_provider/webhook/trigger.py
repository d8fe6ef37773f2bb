"""
``SalebotMessageTrigger``: an event trigger for ``AssetWatcher`` that follows the webhook's messages.

It reads the receiver's spool (a folder the triggerer shares) or the Redis stream the receivers
forward to, and yields an event per message that passes its filters. It runs as an Airflow 3.3
shared stream in ack mode: the read position moves on only after Airflow has stored the events of
what was read, and it is kept in the watched asset's ``asset_state_store``, so a triggerer restart
resumes where it left off. Delivery is at least once: nothing is skipped; a message can come
again only after a triggerer crash, and message ids seen lately are dropped as repeats.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

try:
    from airflow.triggers.shared_stream import AdvanceItem, AdvanceOutcome, SharedStreamProducer
except ImportError as exc:  # Airflow 3.0 to 3.2: no shared streams, no asset state store
    from airflow import __version__ as _airflow_version

    raise ImportError(
        f"SalebotMessageTrigger needs Airflow 3.3 or later (its shared streams and asset state store); "
        f"this is Airflow {_airflow_version}. The rest of the provider works on 3.0 and later."
    ) from exc

from salebot_provider.exceptions import SalebotValidationError
from salebot_provider.webhook.spool import START, Position, SpoolReader

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Hashable, Sequence

log = logging.getLogger(__name__)

#: The asset state store of each running trigger, by its shared stream key: the producer (built by
#: Airflow from the kwargs alone) keeps its cursor there.
_STORES: dict[Hashable, Any] = {}
#: Message ids kept with the cursor (a restart still drops repeats among the latest of them).
SAVED_IDS = 1_000
#: Records read at a time.
BATCH = 200


def _fail(name: str, rule: str) -> SalebotValidationError:
    return SalebotValidationError(f"SalebotMessageTrigger: '{name}' {rule}")


def _ids(name: str, value: Any) -> list[int] | None:
    if value is None:
        return None
    values = [value] if isinstance(value, (int, str)) else value
    if not isinstance(values, (list, tuple)) or not values:
        raise _fail(name, "must be a whole number or a non-empty list of them")
    out = []
    for item in values:
        if isinstance(item, bool) or not (
            isinstance(item, int) or (isinstance(item, str) and item.isdigit())
        ):
            raise _fail(name, f"must be whole numbers; got {item!r:.40}")
        out.append(int(item))
    return out


def _pattern(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise _fail(name, "must be a regular expression (text)")
    try:
        re.compile(value)
    except re.error as exc:
        raise _fail(name, f"is not a valid regular expression: {exc}") from None
    return value


class SalebotMessageTrigger(BaseEventTrigger):
    r"""
    Fires an event for each webhook message that passes its filters (Airflow 3.3+, ``AssetWatcher``).

    .. code-block:: python

        inbound = Asset(
            "salebot_inbound_messages",
            watchers=[
                AssetWatcher(
                    name="salebot_inbound",
                    trigger=SalebotMessageTrigger(spool="/var/lib/salebot-webhook"),
                )
            ],
        )

    The event's payload (``extra["payload"]`` of the asset event) holds ids, not personal data:
    ``id``, ``client_id``, ``is_input``, ``client_type``, ``message_id``, ``project_id``, ``notice``,
    ``received_at``, what ``text_pattern`` matched (``matched``) and which ``labels`` apply; the text,
    attachments and the client's name and messenger id only with ``include_text=True``.

    :param spool: the receiver's spool folder, on a disk this triggerer shares.
    :param redis: where the receivers forward to instead: a Redis URL without a password, or the id
        of an Airflow Redis connection (the password stays in the connection).
    :param stream: the Redis stream's name.
    :param is_input: 1 (default): only what clients write; 0: only what the bot sends; None: both.
    :param client_type: only these messengers (Salebot's channel numbers).
    :param text_pattern: only messages whose text matches this regular expression (``re.search``).
    :param message_id: only messages sent from these blocks of the bot.
    :param labels: name -> regular expression; the payload's ``labels`` lists the names whose
        pattern the text matches (no filtering), e.g. ``{"stop": r"(?i)^\\s*(стоп|stop)\\b"}``.
    :param include_text: put the text, attachments, name and messenger id in the payload.
    :param start: where a watcher with no saved position begins: ``"end"`` (default: what arrives
        from now on) or ``"beginning"`` (everything the spool or stream still holds).
    :param poll_interval: seconds between looks at the spool when nothing is new.
    :param dedup_window: message ids remembered to drop repeats (the last 1,000 survive a restart).
    """

    def __init__(
        self,
        *,
        spool: str | None = None,
        redis: str | None = None,
        stream: str = "salebot:webhook",
        is_input: int | bool | None = 1,
        client_type: int | Sequence[int] | None = None,
        text_pattern: str | None = None,
        message_id: int | Sequence[int] | None = None,
        labels: dict[str, str] | None = None,
        include_text: bool = False,
        start: str = "end",
        poll_interval: float = 1.0,
        dedup_window: int = 10_000,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if (spool is None) == (redis is None):
            raise _fail("spool", "or 'redis': give exactly one, where the receiver's messages are")
        if spool is not None and (not isinstance(spool, str) or not spool.strip()):
            raise _fail("spool", "must be a folder path")
        if redis is not None:
            if not isinstance(redis, str) or not redis.strip():
                raise _fail("redis", "must be a Redis URL or an Airflow connection id")
            if "://" in redis and "@" in redis.split("://", 1)[1].split("/", 1)[0]:
                raise _fail(
                    "redis",
                    "must not hold credentials (trigger arguments are stored and shown): put them in an "
                    "Airflow Redis connection and give its id",
                )
        if not isinstance(stream, str) or not stream:
            raise _fail("stream", "must be a stream name")
        if is_input not in (None, 0, 1):
            raise _fail("is_input", "must be 1, 0 or None")
        if text_pattern is not None:
            _pattern("text_pattern", text_pattern)
        if labels is not None:
            if not isinstance(labels, dict) or not labels:
                raise _fail("labels", "must be a mapping of names to regular expressions")
            for name, pattern in labels.items():
                if not isinstance(name, str) or not name:
                    raise _fail("labels", f"names must be text; got {name!r:.40}")
                _pattern(f"labels[{name!r}]", pattern)
        if start not in ("end", "beginning"):
            raise _fail("start", "must be 'end' or 'beginning'")
        if (
            isinstance(poll_interval, bool)
            or not isinstance(poll_interval, (int, float))
            or not 0 < poll_interval <= 3600
        ):
            raise _fail("poll_interval", "must be seconds, above 0 and at most 3600")
        if (
            isinstance(dedup_window, bool)
            or not isinstance(dedup_window, int)
            or not 0 <= dedup_window <= 1_000_000
        ):
            raise _fail("dedup_window", "must be a whole number from 0 to 1,000,000")
        self.spool = spool
        self.redis = redis
        self.stream = stream
        self.is_input = None if is_input is None else int(is_input)
        self.client_type = _ids("client_type", client_type)
        self.text_pattern = text_pattern
        self.message_id = _ids("message_id", message_id)
        self.labels = dict(labels) if labels else None
        self.include_text = bool(include_text)
        self.start = start
        self.poll_interval = float(poll_interval)
        self.dedup_window = dedup_window
        self._text_re = re.compile(text_pattern) if text_pattern else None
        self._label_res = {k: re.compile(v) for k, v in (self.labels or {}).items()}

    def serialize(self) -> tuple[str, dict[str, Any]]:
        """The classpath and the plain, secret-free kwargs the triggerer rebuilds it from."""
        return (
            f"{type(self).__module__}.{type(self).__qualname__}",
            {
                "spool": self.spool,
                "redis": self.redis,
                "stream": self.stream,
                "is_input": self.is_input,
                "client_type": self.client_type,
                "text_pattern": self.text_pattern,
                "message_id": self.message_id,
                "labels": self.labels,
                "include_text": self.include_text,
                "start": self.start,
                "poll_interval": self.poll_interval,
                "dedup_window": self.dedup_window,
            },
        )

    # ------------------------------------------------------------------ what an event is

    @property
    def cursor_key(self) -> str:
        """
        The key of this watcher's position in the asset state store.

        Named by where it reads and which messages it passes, so that two watchers of one asset keep
        their own, and a change of ``labels``, ``include_text`` or ``poll_interval`` keeps the place.
        """
        source = {
            k: getattr(self, k)
            for k in ("spool", "redis", "stream", "is_input", "client_type", "text_pattern", "message_id")
        }
        digest = hashlib.sha256(json.dumps(source, sort_keys=True).encode()).hexdigest()[:16]
        return f"salebot_webhook:{digest}"

    def event_payload(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The event for one spool record, or None when the filters leave it out."""
        message = record.get("message")
        if not isinstance(message, dict) or not message.get("id"):
            return None
        if self.is_input is not None and bool(message.get("is_input")) != bool(self.is_input):
            return None
        if self.client_type is not None and message.get("client_type") not in self.client_type:
            return None
        if self.message_id is not None and message.get("message_id") not in self.message_id:
            return None
        text = message.get("text") or ""
        payload: dict[str, Any] = {
            "id": message["id"],
            "client_id": message.get("client_id"),
            "is_input": bool(message.get("is_input")),
            "client_type": message.get("client_type"),
            "message_id": message.get("message_id"),
            "project_id": message.get("project_id"),
            "notice": message.get("notice"),
            "received_at": record.get("received_at"),
        }
        if self._text_re is not None:
            match = self._text_re.search(text)
            if match is None:
                return None
            payload["matched"] = match.group(0)[:100]
        if self._label_res:
            payload["labels"] = [name for name, pattern in self._label_res.items() if pattern.search(text)]
        if self.include_text:
            payload.update(
                text=message.get("text"),
                attachments=[a.get("url") for a in message.get("attachments") or []],
                name=message.get("name"),
                recepient=message.get("recepient"),
            )
        return payload

    # ------------------------------------------------------------------ as a shared stream (3.3)

    def shared_stream_key(self) -> Hashable:
        """
        One poll per watcher: the key is everything it was built from.

        The triggerer asks for the key after it gave the watcher its ``asset_state_store`` and
        before it builds the producer, which finds the store here by the key.
        """
        key = ("salebot_webhook", json.dumps(self.serialize()[1], sort_keys=True))
        if getattr(self, "asset_state_store", None) is not None:
            _STORES[key] = self.asset_state_store
        return key

    @classmethod
    def create_shared_stream_producer(cls, kwargs: dict[str, Any]) -> SharedStreamProducer:
        """The reader of the spool or the stream (ack mode: the position moves once events are stored)."""
        trigger = cls(**kwargs)
        if trigger.redis is not None:
            return _StreamProducer(trigger)
        return _SpoolProducer(trigger)

    async def filter_shared_stream(self, shared_stream: AsyncIterator[Any]) -> AsyncIterator[TriggerEvent]:
        """Each record that passes the filters becomes an event."""
        async for record in shared_stream:
            payload = self.event_payload(record)
            if payload is not None:
                yield TriggerEvent(payload)  # type: ignore[no-untyped-call]

    async def run(self) -> AsyncIterator[TriggerEvent]:
        """
        Outside a shared stream (a plain loop, a test): the same reading and filtering.

        A record counts as done once the loop asks for the next event; there is no persistence
        check here, which the triggerer's shared stream adds.
        """
        self.shared_stream_key()  # hands the producer the store
        producer = self.create_shared_stream_producer(self.serialize()[1])
        try:
            async for record, token in producer.open_stream():
                payload = self.event_payload(record)
                if payload is not None:
                    yield TriggerEvent(payload)  # type: ignore[no-untyped-call]
                await producer.advance([AdvanceItem(token, AdvanceOutcome(acked=1, failed=0))])
        finally:
            await producer.aclose()


class _Producer(SharedStreamProducer):
    """What both sources share: the saved state, the window of ids seen, backing off on errors."""

    def __init__(self, trigger: SalebotMessageTrigger) -> None:
        self.trigger = trigger
        self.key = trigger.shared_stream_key()
        #: Ids whose events Airflow stored (or that were refused for good), oldest first.
        self.seen: OrderedDict[str, None] = OrderedDict()
        #: Ids yielded and not yet resolved.
        self.in_flight: dict[str, int] = {}
        self.store: Any = None
        self.repeats = 0

    async def _load(self) -> dict[str, Any]:
        self.store = _STORES.get(self.key)
        if self.store is None:
            log.warning(
                "SalebotMessageTrigger: no asset_state_store (not run by an AssetWatcher on Airflow "
                "3.3+): the position is kept in memory only"
            )
            return {}
        saved = await _store_get(self.store, self.trigger.cursor_key)
        state = saved if isinstance(saved, dict) else {}
        for message_id in state.get("seen") or ():
            self.seen[str(message_id)] = None
        return state

    async def _save(self, state: dict[str, Any]) -> None:
        if self.store is not None:
            state["seen"] = list(self.seen)[-SAVED_IDS:]
            await _store_set(self.store, self.trigger.cursor_key, state)

    def repeat(self, message_id: str) -> bool:
        """Whether this id was seen lately or is in flight (then it is dropped)."""
        if message_id in self.seen or message_id in self.in_flight:
            self.repeats += 1
            return True
        return False

    def remember(self, message_id: str) -> None:
        self.in_flight.pop(message_id, None)
        self.seen[message_id] = None
        self.seen.move_to_end(message_id)
        while len(self.seen) > self.trigger.dedup_window:
            self.seen.popitem(last=False)

    @staticmethod
    def is_redelivery(outcome: AdvanceOutcome) -> bool:
        """An event Airflow did not store (a failure, or nobody subscribed): read it again."""
        return bool(outcome.failed) or (outcome.acked == 0 and outcome.rejected == 0)

    async def _pause(self, attempt: int, exc: BaseException) -> None:
        """Back off on an error instead of raising: a raising watcher is rebuilt in a tight loop."""
        wait = min(60.0, 0.5 * 2**attempt)
        log.warning(
            "SalebotMessageTrigger: reading %s failed (%s: %s); trying again in %.0f s",
            self.trigger.spool or f"Redis stream {self.trigger.stream}",
            type(exc).__name__,
            str(exc)[:200],
            wait,
        )
        await asyncio.sleep(wait)


class _SpoolProducer(_Producer):
    """Follows a spool folder; the position is ``[segment, offset]`` in the asset state store."""

    def __init__(self, trigger: SalebotMessageTrigger) -> None:
        super().__init__(trigger)
        self.position = START
        #: The start of the earliest record Airflow did not store: read again from there.
        self.rewind: Position | None = None
        self.blocked_at: Position | None = None

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        state = await self._load()
        folder = self.trigger.spool
        assert folder is not None
        reader = SpoolReader(folder)
        if state.get("position"):
            self.position = Position(*state["position"])
        elif self.trigger.start == "end":
            self.position = await asyncio.to_thread(reader.end)
            await self._save({"position": self.position.as_list()})
        reader.position = self.position
        errors = 0
        while True:
            _stop_if_cancelled()
            try:
                if self.rewind is not None:
                    # What follows the rewind point was stored (seen) or is still in flight: only
                    # the records Airflow did not store are yielded again.
                    reader.position, self.rewind = self.rewind, None
                batch = await asyncio.to_thread(reader.read, BATCH)
                if reader.missing:
                    log.warning(
                        "SalebotMessageTrigger: spool segments %s were gone (retention)", reader.missing
                    )
                    reader.missing.clear()
                errors = 0
                for record, start, end in batch:
                    message_id = str((record.get("message") or {}).get("id") or "")
                    if not message_id:
                        log.warning(
                            "SalebotMessageTrigger: an unreadable spool line at %s was passed over", start
                        )
                        continue
                    if self.repeat(message_id):
                        continue
                    self.in_flight[message_id] = 1
                    yield record, (start.as_list(), end.as_list(), message_id)
                if not batch:
                    await asyncio.sleep(self.trigger.poll_interval)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._pause(errors, exc)
                errors += 1
                reader = SpoolReader(folder, self.position)

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        for item in batch:
            start, end, message_id = item.broker_payload
            start, end = Position(*start), Position(*end)
            if self.is_redelivery(item.outcome):
                self.in_flight.pop(message_id, None)
                if self.rewind is None or start < self.rewind:
                    self.rewind = start
                if self.blocked_at is None or start < self.blocked_at:
                    self.blocked_at = start
                continue
            self.remember(message_id)
            if self.blocked_at is not None and start == self.blocked_at:
                self.blocked_at = None
            if self.blocked_at is None and end > self.position:
                self.position = end
        await self._save({"position": self.position.as_list()})


class _StreamProducer(_Producer):
    """Reads the Redis stream in a consumer group of its own; an entry is acknowledged once stored."""

    #: One fixed consumer per group: a restarted watcher takes back the entries it had pending.
    CONSUMER = "airflow-triggerer"

    def __init__(self, trigger: SalebotMessageTrigger) -> None:
        super().__init__(trigger)
        self.client: Any = None
        self.group = ""
        self.reread = True  # a (re)started consumer first takes back what it had pending
        self.entries_in_flight: set[str] = set()
        #: Whether this watcher made its group before (kept in the asset state store).
        self.group_made = False

    async def _url(self) -> str:
        setting = self.trigger.redis
        assert setting is not None
        if "://" in setting:
            return setting
        from salebot_provider.quota import aget_connection, redis_url

        return redis_url(setting, await aget_connection(setting))

    def _group_name(self) -> str:
        names = sorted(getattr(self.store, "_by_name", {}) or {}) if self.store is not None else []
        asset = ",".join(names) or "watcher"
        return f"salebot:{asset}:{self.trigger.cursor_key.split(':', 1)[1]}"

    async def open_stream(self) -> AsyncIterator[tuple[Any, Any]]:
        import redis.asyncio

        state = await self._load()
        self.group_made = bool(state.get("group"))
        self.group = self._group_name()
        errors = 0
        while True:
            _stop_if_cancelled()
            try:
                if self.client is None:
                    url = await self._url()
                    self.client = redis.asyncio.Redis.from_url(
                        url, socket_timeout=30, socket_connect_timeout=5
                    )
                    await self._make_group(redis.exceptions.ResponseError)
                async for entry in self._entries():
                    yield entry
                errors = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                await self._pause(errors, exc)
                errors += 1
                self.reread = True
                self.entries_in_flight.clear()
                self.in_flight.clear()
                with contextlib.suppress(Exception):
                    await self.client.aclose()
                self.client = None

    async def _make_group(self, response_error: type[Exception]) -> None:
        """
        Create this watcher's consumer group, unless it exists.

        A new watcher starts where ``start`` says. A group this watcher had made before and that is
        gone (Redis restarted without persistence, or someone deleted it) is made again at the
        stream's beginning: what was forwarded meanwhile is read, and repeats are dropped by id.
        """
        first = "0" if self.trigger.start == "beginning" or self.group_made else "$"
        try:
            await self.client.xgroup_create(self.trigger.stream, self.group, id=first, mkstream=True)
        except response_error:  # BUSYGROUP: it exists
            pass
        else:
            if self.group_made:
                log.warning(
                    "SalebotMessageTrigger: the consumer group of Redis stream %s was gone (Redis "
                    "restarted without persistence?); reading the stream from its beginning, "
                    "repeats dropped by id",
                    self.trigger.stream,
                )
        if not self.group_made:
            self.group_made = True
            await self._save({})

    async def _save(self, state: dict[str, Any]) -> None:
        await super()._save({**state, "group": self.group_made})

    async def _entries(self) -> AsyncIterator[tuple[Any, Any]]:
        """One read: this consumer's pending entries (after a start or a failure), else new ones."""
        stream, group = self.trigger.stream, self.group
        if self.reread:
            after, entries = "0", list[Any]()
            while True:
                reply = await self.client.xreadgroup(group, self.CONSUMER, {stream: after}, count=BATCH)
                page = reply[0][1] if reply else []
                if not page:
                    break
                entries.extend(page)
                after = page[-1][0]
            self.reread = False
        else:
            # Within the socket's timeout: a long poll_interval only means fewer empty reads.
            block = max(1, int(min(self.trigger.poll_interval, 5.0) * 1000))
            reply = await self.client.xreadgroup(
                group, self.CONSUMER, {stream: ">"}, count=BATCH, block=block
            )
            entries = reply[0][1] if reply else []
        repeats = []
        for entry_id, fields in entries:
            raw = fields.get(b"r") or fields.get("r")
            try:
                record = json.loads(raw)
                message_id = str(record["message"]["id"])
            except (TypeError, ValueError, KeyError):
                log.warning("SalebotMessageTrigger: an unreadable stream entry %s was passed over", entry_id)
                repeats.append(entry_id)
                continue
            entry = _text(entry_id)
            if entry in self.entries_in_flight:
                continue  # yielded already, not yet resolved (a re-read of the pending entries)
            if self.repeat(message_id):
                repeats.append(entry_id)  # the same message again (posted twice, or to two receivers)
                continue
            self.in_flight[message_id] = 1
            self.entries_in_flight.add(entry)
            yield record, (entry, message_id)
        if repeats:
            await self.client.xack(stream, group, *repeats)

    async def advance(self, batch: Sequence[AdvanceItem]) -> None:
        done = []
        for item in batch:
            entry_id, message_id = item.broker_payload
            self.entries_in_flight.discard(entry_id)
            if self.is_redelivery(item.outcome):
                self.in_flight.pop(message_id, None)
                self.reread = True  # still pending in the group: read again
                continue
            self.remember(message_id)
            done.append(entry_id)
        await self._save({})  # the ids first: a rebuilt watcher drops these if they come again
        if not done:
            return
        try:
            if self.client is None:
                raise ConnectionError("not connected")
            await self.client.xack(self.trigger.stream, self.group, *done)
        except Exception as exc:
            # Never raise here: the triggerer would end the whole shared stream. The entries stay
            # pending in the group; once the stream is back, they are read again, found seen by id,
            # and acknowledged then.
            log.warning(
                "SalebotMessageTrigger: acknowledging %d entries of Redis stream %s failed (%s: %s); "
                "they are acknowledged once it is back",
                len(done),
                self.trigger.stream,
                type(exc).__name__,
                str(exc)[:200],
            )
            self.reread = True

    async def aclose(self) -> None:
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()


def _stop_if_cancelled() -> None:
    """
    Raise a cancellation that a library swallowed, so that the triggerer's stop ends the read loop.

    On Python 3.11, ``asyncio.wait_for`` (used inside Redis clients) can return a result and drop a
    cancel that came at the same moment; the task stays marked as cancelling and would otherwise read
    on forever while the triggerer waits for it to end.
    """
    task = asyncio.current_task()
    cancelling = getattr(task, "cancelling", None)  # Python 3.11+
    if cancelling is not None and cancelling():
        raise asyncio.CancelledError


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _accessors(store: Any) -> list[Any]:
    """The accessor(s) of the watched asset(s): a watcher of several assets keeps its place in each."""
    singles = [*getattr(store, "_by_name", {}).values(), *getattr(store, "_by_uri", {}).values()]
    return singles if len(singles) > 1 else [store]


async def _store_get(store: Any, key: str) -> Any:
    return await _accessors(store)[0].aget(key)


async def _store_set(store: Any, key: str, value: Any) -> None:
    for accessor in _accessors(store):
        await accessor.aset(key, value)
