"""SalebotHook end to end against the emulator: every action, with the state checked afterwards."""

from __future__ import annotations

import datetime as dt
import time
from typing import TYPE_CHECKING, Any

import pytest

from salebot_provider.exceptions import (
    SalebotAPIError,
    SalebotConnectionError,
    SalebotNotFoundError,
    SalebotPermissionError,
)
from salebot_provider.hooks import SalebotHook
from tests.samples import CATALOG_ACTIONS

if TYPE_CHECKING:
    from collections.abc import Iterator

    from salebot_provider.testing import SalebotEmulator

#: The actions the emulator answered with success in this module's tests, read off its request log.
ANSWERED: set[str] = set()


@pytest.fixture
def emu(salebot_emulator: SalebotEmulator) -> Iterator[SalebotEmulator]:
    salebot_emulator.seed_clients(40, seed=5)
    yield salebot_emulator
    ANSWERED.update(r.action for r in salebot_emulator.requests if r.status == 200)


@pytest.fixture
def hook(emu: SalebotEmulator) -> Iterator[SalebotHook]:
    with SalebotHook() as h:
        yield h


def some_client(emu: SalebotEmulator, client_type: int | None = None) -> Any:
    return next(c for c in emu.state.clients.values() if client_type in (None, c.client_type))


def test_channels_and_blocks(hook: SalebotHook) -> None:
    ok, message = hook.test_connection()
    assert ok, message
    channels = hook.connected_channels()
    assert channels["telegram"][0]["group_id"] == "shop_bot"
    assert [b["id"] for b in hook.get_messages()["messages"]] == [390, 391, 392]


def test_callbacks_reach_the_outbox_and_save_extra_variables(hook: SalebotHook, emu: SalebotEmulator) -> None:
    client = some_client(emu)
    hook.callback(client_id=client.id, message="paid", extra={"order_sum": 990})
    assert emu.client(client.id).variables["order_sum"] == 990
    vk, tg, ok = (some_client(emu, t) for t in (0, 1, 8))
    hook.vk_callback(vk.platform_id, vk.group, message="vk")
    hook.tg_callback(tg.platform_id, tg.group, message="tg")
    hook.ok_callback(ok.platform_id, ok.group, message="ok", resume_bot=True)
    sent = [(o.action, o.client_id, o.text) for o in emu.outbox]
    assert sent == [
        ("callback", client.id, "paid"),
        ("vk_callback", vk.id, "vk"),
        ("tg_callback", tg.id, "tg"),
        ("ok_callback", ok.id, "ok"),
    ]
    with pytest.raises(SalebotNotFoundError):
        hook.tg_callback("0", "shop_bot")


def test_whatsapp_and_email_callbacks_create_the_client(hook: SalebotHook, emu: SalebotEmulator) -> None:
    before = len(emu.state.clients)
    hook.whatsapp_callback("+7 900 555-00-11", name="Олег", extra={"source": "site"})
    hook.email_callback("lead@example.com", name="Lead")
    assert len(emu.state.clients) == before + 2
    wa = emu.state.find_client("79005550011")
    assert wa is not None
    assert wa.variables == {"source": "site"}
    assert emu.outbox[-1].action == "email_callback"


def test_callbacks_by_platform_id_in_chunks(hook: SalebotHook, emu: SalebotEmulator) -> None:
    ids = emu.seed_clients(650, seed=6, with_deals=False)
    platform_ids = [emu.client(i).platform_id for i in ids]
    results = list(hook.iter_chunked("send_callback_by_platform_id", platform_ids, callback_text="promo"))
    assert [len(r.items) for r in results] == [300, 300, 50]
    assert {o.client_id for o in emu.outbox} == set(ids)
    assert [len(r.body["platform_ids"]) for r in emu.requests] == [300, 300, 50]


def test_messages_and_history(hook: SalebotHook, emu: SalebotEmulator) -> None:
    client = some_client(emu)
    hook.message(client.id, message="Здравствуйте", buttons=[{"type": "reply", "text": "Да"}])
    hook.message(client.id, attachment_type="image", attachment_url="https://x/a.png", time_shift=60)
    hook.whatsapp_message("79001112233", message="hi")
    assert [o.text for o in emu.outbox] == ["Здравствуйте", None, "hi"]
    assert emu.outbox[1].due_at >= emu.outbox[0].due_at + 59
    assert [m["text"] for m in hook.get_history(client.id)["result"]] == ["Здравствуйте"]
    emu.advance(61)  # the scheduled one is in the history once it is due
    assert [m["text"] for m in hook.get_history(client.id)["result"]] == ["Здравствуйте", ""]
    hook.clear_history(client.id)
    assert hook.get_history(client.id)["result"] == []


def test_broadcast_to_a_list_with_send_time(hook: SalebotHook, emu: SalebotEmulator) -> None:
    members = list(emu.state.lists[1170282])
    start = dt.datetime(2031, 1, 1, 9, 0, tzinfo=dt.timezone.utc)  # 12:00 in Moscow
    hook.broadcast(list_id=1170282, message="sale", send_time=start, shift=1.5)
    assert [o.client_id for o in emu.outbox] == members
    assert emu.outbox[0].due_at == start.timestamp()
    assert emu.outbox[-1].due_at == start.timestamp() + 1.5 * (len(members) - 1)


def test_assign_to_user(hook: SalebotHook, emu: SalebotEmulator) -> None:
    client = some_client(emu)
    hook.assign_to_user(client.id, email="sales@example.com")
    assert emu.client(client.id).assigned_to == "sales@example.com"
    with pytest.raises(SalebotAPIError, match="not found"):
        hook.assign_to_user(client.id, email="ghost@example.com")


def test_loaded_clients_page_out(hook: SalebotHook, emu: SalebotEmulator) -> None:
    rows = [{"platform_id": f"7900{i:07d}", "group_id": "wa_main", "client_type": 6} for i in range(1200)]
    statuses = [item["status"] for r in hook.iter_chunked("load_clients", rows) for item in r.reply["items"]]
    assert statuses == ["success"] * 1200
    paged = {c["platform_id"] for c in hook.iter_clients()}
    assert {r["platform_id"] for r in rows} <= paged
    assert len(paged) == len(emu.state.clients)
    oldest = [c["id"] for c in hook.iter_clients(reverse=True, page_size=7)]
    assert oldest == sorted(emu.state.clients)


def test_lists(hook: SalebotHook, emu: SalebotEmulator) -> None:
    ids = list(emu.state.clients)[:12]
    for _ in hook.iter_chunked("add_to_list", ids, list_id=1170283, chunk_size=5):
        pass
    assert list(emu.state.lists[1170283]) == ids
    hook.remove_from_list(1170283, ids[:2])
    assert [c["id"] for c in hook.iter_clients(list_id=1170283)] == sorted(ids[2:], reverse=True)


def test_delete_clients(hook: SalebotHook, emu: SalebotEmulator) -> None:
    ids = list(emu.state.clients)[:3]
    hook.delete_clients(ids)
    assert not set(ids) & set(emu.state.clients)
    with pytest.raises(SalebotNotFoundError):
        hook.get_variables(ids[0])


def test_saved_variable_reads_back(hook: SalebotHook, emu: SalebotEmulator) -> None:
    client = some_client(emu)
    hook.save_variables(client_id=client.id, variables={"client.city": "Омск", "stage": "paid"})
    reply = hook.get_variables(client.id)
    assert reply["variables"]["city"] == "Омск"
    assert reply["order_variables"]["stage"] == "paid"
    others = list(emu.state.clients)[-3:]
    hook.save_variables(clients=others, variables={"client.segment": "vip"})
    assert all(emu.client(i).variables["segment"] == "vip" for i in others)


def test_finding_clients(hook: SalebotHook, emu: SalebotEmulator) -> None:
    client = some_client(emu)
    found = hook.find_client_id_by_platform_id([client.platform_id])
    assert found[0]["id"] == client.id
    assert found[0]["variables"]["city"] == client.variables["city"]
    assert hook.find_client_id_by_phone(client.variables["phone"])["client_id"] == client.id
    assert hook.find_client_id_by_email(client.variables["email"])["client_id"] == client.id
    hook.save_variables(client_id=client.id, variables={"client.promo": "X1", "deal_code": "D9"})
    assert hook.find_client_id_by_var("promo", "X1")["client_id"] == client.id
    assert hook.find_client_id_by_var("deal_code", "D9", search_in="order")["client_id"] == client.id
    assert hook.find_latest_client_id_by_var("deal_code", "D9")["client_id"] == client.id
    city = client.variables["city"]
    same_city = {c.id for c in emu.state.clients.values() if c.variables.get("city") == city}
    assert set(hook.find_all_client_id_by_var("city", city)["client_ids"]) == same_city
    several = hook.find_all_client_id_by_several_vars({"city": city, "promo": "X1"})
    assert several["client_ids"] == [client.id]
    assert set(hook.find_clients({"city": {"_in": [city]}})["client_ids"]) == same_city
    wa = some_client(emu, 6)
    assert hook.whatsapp_client_id(wa.platform_id)["client_id"] == wa.id
    with pytest.raises(SalebotNotFoundError):
        hook.whatsapp_client_id("70000000000")
    visitor = hook.online_chat_client_id("site-visitor-1", name="Гость")["client_id"]
    assert emu.client(visitor).name == "Гость"
    assert hook.online_chat_client_id("site-visitor-1")["client_id"] == visitor


def test_deal_life_cycle(hook: SalebotHook, emu: SalebotEmulator) -> None:
    order = hook.create_order(phone="79005550099", name="Кухня", budget=150000, state_id=101)["order_id"]
    client_id = emu.deal(order).client_id
    assert hook.get_current_order_id(client_id)["order_id"] == order
    assert hook.move_order_to_next_state(client_id)["state_id"] == 102
    assert hook.get_order_state(client_id)["state_id"] == 102
    hook.set_order_vars(client_id, {"sum": 150000, "city": "Казань"})
    assert hook.get_order_vars(client_id, ["sum", "missing"])["result"] == {"sum": 150000, "missing": None}
    hook.set_order_state(client_id, 104)
    assert emu.deal(order).state_id == 104
    assert hook.get_orders(client_id, order_status=1)["order_id"] == [order]
    with pytest.raises(SalebotNotFoundError, match="order 1 not found"):
        hook.set_order_vars(client_id, {"a": 1}, order_id=1)


def test_check_whatsapp(hook: SalebotHook) -> None:
    assert hook.check_whatsapp("+7 900 123-45-67")["exists"] is True
    assert hook.check_whatsapp("79001234560")["exists"] is False


def test_every_action_went_through_the_hook_end_to_end() -> None:
    # Runs after the tests above (pytest keeps a module's order): each action reached the emulator.
    assert sorted(ANSWERED) == sorted(CATALOG_ACTIONS)


# ------------------------------------------------------------------------------------- failures


def test_permission_error_names_the_permission(emu: SalebotEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    key = emu.add_key(["clients_read"])
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT",
        f'{{"conn_type": "salebot", "host": "{emu.base_url}", "password": "{key}"}}',
    )
    hook = SalebotHook()
    assert hook.get_variables(some_client(emu).id)["status"] == "success"
    with pytest.raises(SalebotPermissionError, match="crm_write"):
        hook.set_order_state(some_client(emu).id, 102)


def test_read_recovers_from_injected_503s(hook: SalebotHook, emu: SalebotEmulator) -> None:
    emu.inject("get_clients", status=503, times=2)
    assert len(list(hook.iter_clients())) == len(emu.state.clients)
    assert [r.status for r in emu.requests][:3] == [503, 503, 200]


def test_processed_then_failed_send_is_not_repeated(hook: SalebotHook, emu: SalebotEmulator) -> None:
    emu.inject("broadcast", status=502, processed=True, times=1)
    with pytest.raises(SalebotAPIError) as info:
        hook.broadcast(list_id=1170282, message="sale")
    assert info.value.in_doubt is True
    assert [r.action for r in emu.requests] == ["broadcast"]
    assert len(emu.outbox) == len(emu.state.lists[1170282]), "sent once, not twice"


def test_send_after_a_reset_is_not_repeated(hook: SalebotHook, emu: SalebotEmulator) -> None:
    emu.inject("message", reset=True, processed=True, times=1)
    with pytest.raises(SalebotConnectionError):
        hook.message(some_client(emu).id, message="x")
    assert len(emu.outbox) == 1


def test_send_recovers_after_429_with_retry_after(
    hook: SalebotHook, emu: SalebotEmulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    emu.clock = lambda: 1_700_000_000.0  # frozen: only the hook's wait moves the emulator's time
    waits: list[float] = []

    def wait(seconds: float) -> None:
        waits.append(seconds)
        emu.advance(seconds)

    monkeypatch.setattr("time.sleep", wait)
    emu.rate_limit(0.5, "message")  # one message per 2 seconds
    client = some_client(emu)
    hook.message(client.id, message="one")
    hook.message(client.id, message="two")
    assert [r.status for r in emu.requests] == [200, 429, 200]
    assert waits == [2.0]
    assert [o.text for o in emu.outbox] == ["one", "two"]


def test_slow_reply_times_out_a_send_in_doubt(emu: SalebotEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", emu.connection_json(timeout=0.2, backoff_factor=0))
    emu.inject("message", latency=0.5, times=1)
    with pytest.raises(SalebotConnectionError) as info:
        SalebotHook().message(some_client(emu).id, message="x")
    assert info.value.in_doubt is True
    for _ in range(100):  # the emulator finishes the slow request after the hook gave up on it
        if emu.requests:
            break
        time.sleep(0.05)
    assert len(emu.outbox) == 1, "it was sent: a retry would have sent it twice"
    assert len(emu.requests) == 1
