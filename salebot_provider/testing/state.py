"""The emulator's in-memory Salebot project: keys, channels, clients, deals, lists, history, outbox."""

from __future__ import annotations

import random
import secrets
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from salebot_provider.api import PERMISSIONS
from salebot_provider.testing.webhook import webhook_payload

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

#: client_type values: 0 (VKontakte), 6 (WhatsApp) and 13 (telephony) are the vendor's documented
#: ones; the others follow the vendor's messenger list in the emulator's own numbering.
CLIENT_TYPES = {
    0: "vkontakte",
    1: "telegram",
    2: "viber",
    5: "online_chat",
    6: "whatsapp",
    8: "ok",
    11: "email",
    13: "telephony",
}
WHATSAPP, ONLINE_CHAT, EMAIL, TELEPHONY = 6, 5, 11, 13
#: Seeded clients are created from this moment on (01.01.2024 00:00 in Moscow), whatever the clock.
SEED_EPOCH = 1_704_056_400
ACTIVE, WON, LOST = 0, 1, 2
#: The most clients one call seeds: a million take some ten seconds; more is a typo, not a test.
MAX_SEED = 1_000_000
#: The latest the emulator's time may be (01.01.9000 UTC): with sends due up to ten years later,
#: every moment stays a date pendulum can print in any time zone.
MAX_TIME = 221_845_392_000.0

_FIRST = ["Анна", "Иван", "Мария", "Олег", "Елена", "Дмитрий", "Ольга", "Сергей", "Наталья", "Павел", "Ирина"]
_LAST = ["Иванова", "Петров", "Смирнова", "Кузнецов", "Попова", "Соколов", "Лебедева", "Козлов", "Новикова"]
_CITIES = ["Москва", "Казань", "Екатеринбург", "Новосибирск", "Самара", "Пермь", "Воронеж"]
_SEGMENTS = ["new", "regular", "vip", "lapsed"]


@dataclass
class Client:
    """A client as ``get_clients`` shows it, plus what the emulator keeps about it."""

    id: int
    platform_id: str
    client_type: int
    group: str
    name: str | None = None
    tag: str | None = None
    created_at: int = 0
    updated_at: int = 0
    variables: dict[str, Any] = field(default_factory=dict)
    paused: bool = False
    assigned_to: str | None = None

    def public(self, project_id: int) -> dict[str, Any]:
        """The client as the API lists it."""
        return {
            "id": self.id,
            "platform_id": self.platform_id,
            "client_type": self.client_type,
            "name": self.name,
            "avatar": None,
            "message_id": None,
            "project_id": project_id,
            "created_at": self.created_at,
            "updated_at": self.updated_at,
            "custom_answer": None,
            "tag": self.tag,
            "group": self.group,
            "operator_start_dialog": None,
        }


@dataclass
class Deal:
    """A deal (order) in SalebotCRM."""

    id: int
    client_id: int
    state_id: int
    status: int = ACTIVE
    name: str | None = None
    description: str | None = None
    budget: float | None = None
    variables: dict[str, Any] = field(default_factory=dict)
    created_at: int = 0


@dataclass
class OutboxItem:
    """One thing the project would send: a message, a callback, or one recipient of a broadcast."""

    id: int
    kind: str
    action: str
    client_id: int | None
    text: str | None
    due_at: float
    created_at: float
    message_id: int | None = None
    attachment: dict[str, Any] | None = None
    buttons: Any = None
    platform_id: str | None = None
    phone: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """A plain dict, for the admin API and for tests."""
        return asdict(self)


@dataclass
class AutoAdvance:
    """A deal that moves one funnel state on every ``every`` seconds, from ``since``."""

    every: float
    since: float
    applied: int = 0


@dataclass
class State:
    """
    Everything the emulated project holds. Guard it with ``lock``; the emulator does.

    :param clock: the time source (seconds since the epoch); tests may replace it.
    """

    clock: Callable[[], float] = time.time
    project_id: int = 1
    timezone: str = "Europe/Moscow"
    lock: threading.RLock = field(default_factory=threading.RLock)
    keys: dict[str, frozenset[str]] = field(default_factory=dict)
    channels: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    funnel: list[dict[str, Any]] = field(default_factory=list)
    blocks: list[dict[str, Any]] = field(default_factory=list)
    employees: list[str] = field(default_factory=list)
    clients: dict[int, Client] = field(default_factory=dict)
    deals: dict[int, Deal] = field(default_factory=dict)
    lists: dict[int, dict[int, None]] = field(default_factory=dict)
    history: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    outbox: list[OutboxItem] = field(default_factory=list)
    auto_advance: dict[int, AutoAdvance] = field(default_factory=dict)
    #: Every deal created from now on moves along the funnel every this many seconds (None: no).
    advance_new_deals: float | None = None
    by_platform_id: dict[str, list[int]] = field(default_factory=dict)
    deals_by_client: dict[int, list[int]] = field(default_factory=dict)
    next_client_id: int = 40_000_001
    next_deal_id: int = 70_001
    next_message_id: int = 100_001
    next_outbox_id: int = 1
    assign_cursor: int = 0
    #: Where each message is posted as Salebot's webhook posts it (a WebhookPoster), or None.
    webhook: Any = None

    # ------------------------------------------------------------------ set-up

    @classmethod
    def default(
        cls,
        api_key: str | None = None,
        clock: Callable[[], float] = time.time,
        timezone: str = "Europe/Moscow",
    ) -> State:
        """A project with one all-permission key, four channels, a five-state funnel, two lists."""
        state = cls(clock=clock, timezone=timezone)
        state.keys[api_key or secrets.token_hex(20)] = frozenset(PERMISSIONS)
        state.channels = {
            "viber": [],
            "facebook": [],
            "telegram": [
                {
                    "id": 23,
                    "short_name": "shop_bot",
                    "name": "shop_bot",
                    "enabled": True,
                    "group_id": "shop_bot",
                }
            ],
            "whatsapp": [
                {"id": 41, "name": "79990000000", "enabled": True, "status": 1, "group_id": "wa_main"}
            ],
            "avito": [],
            "ok": [{"id": 51, "group": "560001", "group_id": "560001"}],
            "vkontakte": [{"id": 33, "group": "143414131", "group_id": "143414131"}],
        }
        state.funnel = [
            {"id": 101, "name": "New", "status": ACTIVE},
            {"id": 102, "name": "Contacted", "status": ACTIVE},
            {"id": 103, "name": "Offer sent", "status": ACTIVE},
            {"id": 104, "name": "Paid", "status": WON},
            {"id": 105, "name": "Lost", "status": LOST},
        ]
        state.blocks = [
            {"id": 390, "name": "Start", "text": "Здравствуйте! Чем помочь?"},
            {"id": 391, "name": "Catalogue", "text": "Вот наш каталог"},
            {"id": 392, "name": "Promo", "text": "Скидка 20% до пятницы"},
        ]
        state.employees = ["manager@example.com", "sales@example.com"]
        state.lists = {1170282: {}, 1170283: {}}
        return state

    @property
    def default_key(self) -> str:
        """The first key: it has every permission."""
        return next(iter(self.keys))

    def group_ids(self) -> dict[str, int]:
        """Connected channels' group_id -> the client_type of their messenger."""
        types = {name: t for t, name in CLIENT_TYPES.items()}
        return {str(ch["group_id"]): types[kind] for kind, chans in self.channels.items() for ch in chans}

    def has_whatsapp(self) -> bool:
        """Whether a WhatsApp channel is connected."""
        return bool(self.channels.get("whatsapp"))

    # ------------------------------------------------------------------ clients

    def now(self) -> int:
        """The current time in whole seconds, as Salebot stamps records."""
        return int(self.clock())

    def add_client(
        self,
        platform_id: str,
        client_type: int,
        group: str,
        *,
        name: str | None = None,
        tag: str | None = None,
        variables: dict[str, Any] | None = None,
        created_at: int | None = None,
    ) -> Client:
        """Create a client with the next id."""
        stamp = self.now() if created_at is None else created_at
        client = Client(
            self.next_client_id,
            str(platform_id),
            client_type,
            str(group),
            name,
            tag,
            stamp,
            stamp,
            variables or {},
        )
        self.clients[client.id] = client
        self.by_platform_id.setdefault(client.platform_id, []).append(client.id)
        self.next_client_id += 1
        return client

    def clients_with(
        self, platform_id: str, client_type: int | None = None, group: str | None = None
    ) -> list[Client]:
        """The clients with this messenger id (and type and bot, when given), oldest first."""
        found = (self.clients[i] for i in self.by_platform_id.get(str(platform_id), ()))
        return [c for c in found if client_type in (None, c.client_type) and group in (None, c.group)]

    def find_client(
        self, platform_id: str, client_type: int | None = None, group: str | None = None
    ) -> Client | None:
        """The first client with this messenger id (and type and bot, when given)."""
        return next(iter(self.clients_with(platform_id, client_type, group)), None)

    def delete_client(self, client_id: int) -> bool:
        """Delete a client with its deals, history and list memberships."""
        client = self.clients.pop(client_id, None)
        if client is None:
            return False
        self.by_platform_id[client.platform_id].remove(client_id)
        for members in self.lists.values():
            members.pop(client_id, None)
        self.history.pop(client_id, None)
        for deal_id in self.deals_by_client.pop(client_id, []):
            del self.deals[deal_id]
            self.auto_advance.pop(deal_id, None)
        return True

    def seed_clients(self, n: int, seed: int = 0, *, with_deals: bool = True) -> list[int]:
        """
        Make ``n`` realistic clients, deterministically from ``seed``.

        Names, phones, channels and variables (city, age, segment, email, phone) come from a seeded
        generator; every third client gets a deal in the funnel and every tenth joins list 1170282.

        :param n: how many clients, a whole number from 0 to :data:`MAX_SEED`.
        :param seed: the same seed makes the same clients.
        :param with_deals: also make deals and list memberships.
        :return: the new client ids.
        :raises ValueError: for an ``n`` that is not a whole number in that range.
        """
        if not isinstance(n, int) or isinstance(n, bool) or not 0 <= n <= MAX_SEED:
            raise ValueError(f"clients must be a whole number from 0 to {MAX_SEED:,}; got {n!r:.40}")
        rng = random.Random(seed)
        groups = [
            (ctype, str(ch["group_id"]))
            for ctype, chans in ((1, "telegram"), (0, "vkontakte"), (WHATSAPP, "whatsapp"), (8, "ok"))
            for ch in self.channels.get(chans, [])
        ]
        base = SEED_EPOCH
        ids = []
        first_list = next(iter(self.lists), None)
        for i in range(n):
            ctype, group = groups[rng.randrange(len(groups))]
            phone = f"79{rng.randrange(10**9):09d}"
            platform_id = phone if ctype == WHATSAPP else str(rng.randrange(10**8, 10**10))
            name = f"{rng.choice(_FIRST)} {rng.choice(_LAST)}"
            created = base + i * 300 + rng.randrange(300)
            variables = {
                "city": rng.choice(_CITIES),
                "age": rng.randrange(18, 70),
                "segment": rng.choice(_SEGMENTS),
                "phone": phone,
                "email": f"client{self.next_client_id}@example.com",
            }
            client = self.add_client(
                platform_id, ctype, group, name=name, variables=variables, created_at=created
            )
            ids.append(client.id)
            if with_deals and i % 3 == 0:
                state = self.funnel[rng.randrange(len(self.funnel))]
                self.add_deal(
                    client.id,
                    state["id"],
                    name=f"Deal {client.id}",
                    budget=float(rng.randrange(1, 500) * 100),
                )
            if with_deals and first_list is not None and i % 10 == 0:
                self.lists[first_list][client.id] = None
        return ids

    # ------------------------------------------------------------------ deals

    def state_status(self, state_id: int) -> int | None:
        """The deal status a funnel state implies (0 active, 1 won, 2 lost), None for no such state."""
        return next((s["status"] for s in self.funnel if s["id"] == state_id), None)

    def add_deal(self, client_id: int, state_id: int | None = None, **fields: Any) -> Deal:
        """Create a deal; it becomes the client's current one."""
        state_id = self.funnel[0]["id"] if state_id is None else state_id
        deal = Deal(
            self.next_deal_id,
            client_id,
            state_id,
            self.state_status(state_id) or ACTIVE,
            created_at=self.now(),
            **fields,
        )
        self.deals[deal.id] = deal
        self.deals_by_client.setdefault(client_id, []).append(deal.id)
        self.next_deal_id += 1
        if self.advance_new_deals is not None:
            self.auto_advance[deal.id] = AutoAdvance(self.advance_new_deals, self.now())
        return deal

    def client_deals(self, client_id: int) -> list[Deal]:
        """The client's deals, oldest first."""
        return [self.deals[i] for i in self.deals_by_client.get(client_id, ())]

    def current_deal(self, client_id: int) -> Deal | None:
        """The client's current deal: its newest active one, else its newest."""
        deals = self.client_deals(client_id)
        active = [d for d in deals if d.status == ACTIVE]
        return max(active or deals, key=lambda d: d.id, default=None)

    def move_deal(self, deal: Deal, state_id: int) -> None:
        """Put a deal into a funnel state; its status follows the state."""
        deal.state_id = state_id
        deal.status = self.state_status(state_id) or ACTIVE

    def next_state(self, state_id: int) -> int:
        """The next state of the funnel; a won or lost deal stays where it is."""
        if self.state_status(state_id) not in (None, ACTIVE):
            return state_id
        ids = [s["id"] for s in self.funnel]
        position = ids.index(state_id) if state_id in ids else -1
        return int(ids[min(position + 1, len(ids) - 1)])

    def tick(self) -> None:
        """Apply the automatic funnel moves that are due by now."""
        now = self.clock()
        for deal_id, auto in list(self.auto_advance.items()):
            deal = self.deals.get(deal_id)
            if deal is None:
                del self.auto_advance[deal_id]
                continue
            due = int((now - auto.since) // auto.every) if auto.every > 0 else 0
            while auto.applied < due:
                following = self.next_state(deal.state_id)
                if following == deal.state_id:
                    # At the end of the funnel: a tiny period must not make this loop count to 1e300.
                    auto.applied = due
                    break
                self.move_deal(deal, following)
                auto.applied += 1

    # ------------------------------------------------------------------ messages

    def record(
        self, kind: str, action: str, client_id: int | None, text: str | None, due_at: float, **extra: Any
    ) -> OutboxItem:
        """Put one send into the outbox and, for a known client, into its history."""
        item = OutboxItem(self.next_outbox_id, kind, action, client_id, text, due_at, self.clock(), **extra)
        self.next_outbox_id += 1
        self.outbox.append(item)
        if client_id is not None and kind != "callback":
            self.add_history(
                client_id,
                text or "",
                client_replica=False,
                created_at=int(due_at),
                message_id=item.message_id,
            )
            message_id = self.next_message_id - 1
        else:
            message_id, self.next_message_id = self.next_message_id, self.next_message_id + 1
        client = self.clients.get(client_id) if client_id is not None else None
        if self.webhook is not None and client is not None:
            url = (item.attachment or {}).get("url") if isinstance(item.attachment, dict) else None
            self.webhook.post(
                webhook_payload(
                    client,
                    self.project_id,
                    message_id,
                    text,
                    is_input=False,
                    block_id=item.message_id,
                    attachments=[url] if url else None,
                )
            )
        return item

    def client_says(self, client_id: int, text: str, attachments: list[Any] | None = None) -> int:
        """A message from the client to the bot: in its history, and posted to the webhook; its id."""
        client = self.clients[client_id]
        self.add_history(client_id, text, client_replica=True)
        message_id = self.next_message_id - 1
        if self.webhook is not None:
            self.webhook.post(
                webhook_payload(
                    client, self.project_id, message_id, text, is_input=True, attachments=attachments
                )
            )
        return message_id

    def add_history(
        self,
        client_id: int,
        text: str,
        *,
        client_replica: bool,
        created_at: int | None = None,
        message_id: int | None = None,
    ) -> None:
        """Append a message to a client's history."""
        self.history.setdefault(client_id, []).append(
            {
                "id": self.next_message_id,
                "answered": True,
                "client_replica": client_replica,
                "message_id": message_id,
                "message_from_outside": 0,
                "created_at": self.now() if created_at is None else created_at,
                "text": text,
                "attachments": {},
                "delivered": True,
                "error_message": "false",
                "manager_id": None,
                "manager_email": None,
            }
        )
        self.next_message_id += 1

    def summary(self) -> dict[str, Any]:
        """Counts of what the project holds, for the admin API and the console script."""
        return {
            "project_id": self.project_id,
            "clients": len(self.clients),
            "deals": len(self.deals),
            "lists": {str(k): len(v) for k, v in self.lists.items()},
            "outbox": len(self.outbox),
            "keys": len(self.keys),
            "funnel": [s["id"] for s in self.funnel],
        }


def clients_by_ids(state: State, ids: Iterable[Any]) -> list[Client]:
    """The clients among ``ids`` that exist, in the given order."""
    found = []
    for raw in ids:
        try:
            client = state.clients.get(int(raw))
        except (TypeError, ValueError, OverflowError):
            client = None
        if client is not None:
            found.append(client)
    return found
