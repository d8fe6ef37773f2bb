"""The emulator on its own, over raw HTTP: every action's success and failure, keys, limits, faults."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import pytest
import requests

from salebot_provider import api
from salebot_provider.testing import Fault, SalebotEmulator
from salebot_provider.testing.faults import Faults
from salebot_provider.testing.handlers import HANDLERS
from tests.samples import CATALOG_ACTIONS

if TYPE_CHECKING:
    from collections.abc import Iterator

VK = {"user_id": "146467928", "group_id": "143414131"}
MOSCOW_2024_01_01 = 1_704_056_400  # 01.01.2024 00:00 in Moscow


@pytest.fixture(scope="module")
def server() -> Iterator[SalebotEmulator]:
    with SalebotEmulator(seed=3) as emulator:
        yield emulator


@pytest.fixture
def emu(server: SalebotEmulator) -> Iterator[SalebotEmulator]:
    """The module's emulator with a fresh project, a known client, a deal and a VK client."""
    server.reset()
    state = server.state
    with state.lock:
        client = state.add_client(
            "79001234567",
            6,
            "wa_main",
            name="Анна",
            variables={"city": "Kazan", "phone": "79001234567", "email": "anna@example.com"},
        )
        state.add_deal(client.id, 101, name="First").variables["stage"] = "new"
        state.add_client(VK["user_id"], 0, VK["group_id"], name="VK user")
        state.add_client("2568652", 1, "shop_bot", variables={"tg_username": "@belik"})
        state.add_client("1", 8, "560001", name="OK user")
        state.lists[1170282][client.id] = None
        state.add_history(client.id, "Здравствуйте", client_replica=True)
    yield server
    server.reset()


def first_client(emu: SalebotEmulator) -> int:
    return min(emu.state.clients)


def call(
    emu: SalebotEmulator,
    action: str,
    params: Any = None,
    *,
    method: str | None = None,
    key: str | None = None,
) -> requests.Response:
    method = method or api.ACTIONS[action].method
    target = f"{emu.base_url}/api/{key or emu.api_key}/{action}"
    if method == "GET":
        return requests.get(target, params=params, timeout=5)
    return requests.request(method, target, json=params, timeout=5)


def test_emulator_serves_every_one_of_the_41_actions() -> None:
    assert sorted(HANDLERS) == sorted(CATALOG_ACTIONS)


# action -> (parameters of a success, keys the success reply has, parameters of a documented failure,
#            HTTP status of that failure, the failure's "status")
C = "<client>"
CASES: dict[str, tuple[Any, set[str], Any, int, str]] = {
    "callback": (
        {"client_id": C, "message": "go", "utm": "ads"},
        {"status"},
        {"client_id": 1, "message": "x"},
        200,
        "client_not_found",
    ),
    "vk_callback": (
        {**VK, "message": "hi"},
        {"status"},
        {"user_id": "0", "group_id": "143414131"},
        200,
        "client_not_found",
    ),
    "whatsapp_callback": ({"phone": "79005550011", "name": "Олег"}, {"status"}, {"name": "x"}, 200, "fail"),
    "ok_callback": ({"user_id": "1", "group_id": "560001"}, {"status"}, {"user_id": "1"}, 200, "fail"),
    "tg_callback": (
        {"user_id": "2568652", "group_id": "shop_bot"},
        {"status"},
        {"user_id": "9", "group_id": "shop_bot"},
        200,
        "client_not_found",
    ),
    "send_callback_by_platform_id": (
        {"platform_ids": ["2568652"], "callback_text": "cb"},
        {"status"},
        {"platform_ids": list(range(301)), "callback_text": "x"},
        400,
        "fail",
    ),
    "email_callback": ({"email": "new@example.com"}, {"status"}, {"name": "x"}, 200, "fail"),
    "message": (
        {"client_id": C, "message": "hi"},
        {"status"},
        {"client_id": 1, "message": "x"},
        404,
        "client_not_found",
    ),
    "whatsapp_message": (
        {"phone": "79001234567", "message": "hi"},
        {"status"},
        {"phone": "79001234567"},
        200,
        "fail",
    ),
    "broadcast": ({"list": 1170282, "message": "sale"}, {"status"}, {"message": "sale"}, 200, "fail"),
    "get_history": ({"client_id": C}, {"status", "result"}, {"client_id": C, "limit": 2001}, 400, "fail"),
    "clear_history": ({"client_id": C}, {"status"}, {"client_id": 1}, 200, "client_not_found"),
    "assign_to_user": (
        {"client_id": C, "email": "sales@example.com"},
        {"status"},
        {"client_id": C, "email": "nobody@x.ru"},
        200,
        "fail",
    ),
    "load_clients": (
        [{"platform_id": 274827917, "group_id": 143414131, "client_type": 0}],
        {"status", "items"},
        {"platform_id": 1},
        200,
        "fail",
    ),
    "add_to_list": (
        {"list_id": 1170283, "clients": [C]},
        {"status"},
        {"list_id": 5, "clients": [C]},
        200,
        "fail",
    ),
    "remove_from_list": ({"list_id": 1170282, "clients": [C]}, {"status"}, {"clients": [C]}, 200, "fail"),
    "get_clients": ({"limit": 2}, {"status", "clients"}, {"limit": 501}, 400, "fail"),
    "delete_clients": ({"client_ids": [C]}, {"status"}, {"client_ids": list(range(501))}, 400, "fail"),
    "save_variables": (
        {"client_id": C, "variables": {"client.city": "Omsk"}},
        {"status"},
        {"client_id": C},
        200,
        "fail",
    ),
    "get_variables": (
        {"client_id": C},
        {"status", "variables", "order_variables"},
        {"client_id": 1},
        200,
        "client_not_found",
    ),
    "find_client_id_by_platform_id": ({"platform_ids": ["2568652"]}, None, {"group_id": "x"}, 200, "fail"),
    "online_chat_client_id": ({"recipient": "abc"}, {"client_id"}, {"tag": "x"}, 200, "fail"),
    "whatsapp_client_id": (
        {"phone": "+7 (900) 123-45-67"},
        {"status", "client_id"},
        {"phone": "70000000000"},
        404,
        "client_not_found",
    ),
    "find_client_id_by_phone": (
        {"phone": "79001234567"},
        {"status", "client_id"},
        {"phone": "1"},
        200,
        "client_not_found",
    ),
    "find_client_id_by_email": (
        {"email": "Anna@example.com"},
        {"status", "client_id"},
        {"email": "none@x.ru"},
        200,
        "client_not_found",
    ),
    "find_client_id_by_var": (
        {"var": "city", "val": "Kazan"},
        {"status", "client_id"},
        {"var": "city", "val": "Mars"},
        200,
        "client_not_found",
    ),
    "find_latest_client_id_by_var": (
        {"var": "stage", "val": "new"},
        {"status", "client_id"},
        {"var": "stage", "val": "old"},
        200,
        "client_not_found",
    ),
    "find_all_client_id_by_var": (
        {"var": "city", "val": "Kazan"},
        {"status", "client_ids"},
        {"var": "city"},
        200,
        "fail",
    ),
    "find_all_client_id_by_several_vars": (
        {"city": "Kazan"},
        {"status", "client_ids"},
        {"a": 1, "b": 2, "c": 3, "d": 4},
        200,
        "fail",
    ),
    "find_clients": (
        {"q": {"city": {"_in": ["Kazan", "Omsk"]}}},
        {"status", "client_ids"},
        {"include_all": False},
        200,
        "fail",
    ),
    "get_current_order_id": (
        {"client_id": C},
        {"status", "order_id"},
        {"client_id": 1},
        200,
        "client_not_found",
    ),
    "get_orders": (
        {"client_id": C, "order_status": 0},
        {"status", "order_id"},
        {"client_id": 1},
        200,
        "client_not_found",
    ),
    "move_order_to_next_state": (
        {"client_id": C},
        {"status", "state_id"},
        {"client_id": 1},
        200,
        "client_not_found",
    ),
    "get_order_vars": (
        {"client_id": C, "variables": ["stage"]},
        {"status", "result"},
        {"client_id": 1, "variables": ["a"]},
        200,
        "client_not_found",
    ),
    "set_order_vars": (
        {"client_id": C, "variables": {"sum": 5}},
        {"status"},
        {"client_id": C, "order_id": 12345, "variables": {"a": 1}},
        200,
        "order 12345 not found",
    ),
    "create_order": (
        {"phone": "79005550022", "name": "Deal"},
        {"status", "order_id"},
        {"client_id": 1},
        200,
        "client_not_found",
    ),
    "set_order_state": (
        {"client_id": C, "state_id": 103},
        {"status"},
        {"client_id": C, "state_id": 999},
        200,
        "fail",
    ),
    "get_order_state": (
        {"client_id": C},
        {"status", "state_id"},
        {"client_id": C, "order_id": 1},
        200,
        "order not found",
    ),
    "check_whatsapp": ({"phone": "+7 900 123-45-67"}, {"status", "exists"}, {}, 200, "fail"),
    "connected_channels": ({}, {"project_id", "telegram", "whatsapp", "vkontakte"}, None, 0, ""),
    "get_messages": ({}, {"status", "messages"}, None, 0, ""),
}


def _fill(value: Any, client_id: int) -> Any:
    if value == C:
        return client_id
    if isinstance(value, dict):
        return {k: _fill(v, client_id) for k, v in value.items()}
    if isinstance(value, list):
        return [_fill(v, client_id) for v in value]
    return value


@pytest.mark.parametrize("action", CATALOG_ACTIONS)
def test_action_answers_its_documented_success(emu: SalebotEmulator, action: str) -> None:
    params, keys, *_ = CASES[action]
    reply = call(emu, action, _fill(params, first_client(emu)))
    assert reply.status_code == 200, reply.text
    body = reply.json()
    if keys is None:
        assert isinstance(body, list | dict)
        if isinstance(body, dict):
            assert body.get("status") in (None, "success")
    else:
        assert keys <= set(body)
        assert body.get("status", "success") == "success"


def test_find_by_platform_id_returns_the_client_with_its_variables(emu: SalebotEmulator) -> None:
    found = call(emu, "find_client_id_by_platform_id", {"platform_ids": ["2568652"]}).json()
    assert [(c["platform_id"], c["group"], c["variables"]) for c in found] == [
        ("2568652", "shop_bot", {"tg_username": "@belik"})
    ]


@pytest.mark.parametrize("action", [a for a in CATALOG_ACTIONS if CASES[a][2] is not None])
def test_action_answers_a_documented_failure(emu: SalebotEmulator, action: str) -> None:
    _, _, params, status, api_status = CASES[action]
    reply = call(emu, action, _fill(params, first_client(emu)))
    assert reply.status_code == status, reply.text
    assert reply.json()["status"] == api_status


def test_connected_channels_and_get_messages_fail_for_an_unknown_key(emu: SalebotEmulator) -> None:
    for action in ("connected_channels", "get_messages"):
        reply = call(emu, action, {}, key="not-a-key")
        assert reply.status_code == 401


@pytest.mark.parametrize("action", CATALOG_ACTIONS)
def test_a_key_without_the_permission_gets_wrong_action(emu: SalebotEmulator, action: str) -> None:
    needed = api.ACTIONS[action].permission
    key = emu.add_key(set(api.PERMISSIONS) - {needed})
    reply = call(emu, action, _fill(CASES[action][0], first_client(emu)), key=key)
    assert reply.status_code == 403
    assert "WRONG_ACTION" in reply.text


def test_unknown_action_and_wrong_method(emu: SalebotEmulator) -> None:
    assert call(emu, "no_such_action", {}, method="GET").status_code == 404
    assert call(emu, "get_clients", {}, method="POST").status_code == 405
    assert call(emu, "callback", {"client_id": first_client(emu)}, method="GET").status_code == 200


def test_malformed_json_body_is_refused(emu: SalebotEmulator) -> None:
    reply = requests.post(f"{emu.base_url}/api/{emu.api_key}/message", data=b"{oops", timeout=5)
    assert reply.status_code == 400
    assert reply.json()["status"] == "fail"


# ------------------------------------------------------------------------------------- behaviour


def test_save_variables_writes_the_deal_by_default_and_the_profile_with_client_prefix(
    emu: SalebotEmulator,
) -> None:
    cid = first_client(emu)
    call(emu, "save_variables", {"client_id": cid, "variables": {"client.city": "Omsk", "stage": "paid"}})
    assert emu.client(cid).variables["city"] == "Omsk"
    assert emu.state.current_deal(cid).variables["stage"] == "paid"  # type: ignore[union-attr]
    assert "stage" not in emu.client(cid).variables


def test_find_clients_operators(emu: SalebotEmulator) -> None:
    ids = emu.seed_clients(50, seed=9)
    cities = {cid: emu.client(cid).variables["city"] for cid in ids}

    def find(q: dict[str, Any], **more: Any) -> set[int]:
        reply = call(emu, "find_clients", {"q": q, **more})
        return set(reply.json()["client_ids"]) & set(ids)

    assert find({"city": "Казань"}) == {c for c, city in cities.items() if city == "Казань"}
    assert find({"city": {"_in": ["Казань", "Пермь"]}}) == {
        c for c, v in cities.items() if v in ("Казань", "Пермь")
    }
    assert find({"city": {"_not_in": ["Казань"]}}) == {c for c, v in cities.items() if v != "Казань"}
    assert find({"city": {"_not": "Пермь"}}) == {c for c, v in cities.items() if v != "Пермь"}
    both = find({"city": "Казань", "segment": "vip"})
    either = find({"city": "Казань", "segment": "vip"}, include_all=False)
    assert both <= either
    assert len(either) > len(both)


def test_find_clients_in_deals(emu: SalebotEmulator) -> None:
    reply = call(emu, "find_clients", {"q": {"stage": "new"}, "search_in": "order"})
    assert reply.json()["client_ids"] == [first_client(emu)]
    assert call(emu, "find_clients", {"q": {"stage": "new"}}).json()["client_ids"] == []


def test_get_clients_pages_with_offset_limit_list_and_reverse(emu: SalebotEmulator) -> None:
    emu.seed_clients(30, with_deals=False)
    everyone = list(emu.state.clients)
    newest = [c["id"] for c in call(emu, "get_clients", {"limit": 10}).json()["clients"]]
    assert newest == everyone[::-1][:10]
    oldest = [
        c["id"]
        for c in call(emu, "get_clients", {"limit": 5, "offset": 5, "reverse": "true"}).json()["clients"]
    ]
    assert oldest == everyone[5:10]
    listed = call(emu, "get_clients", {"list": 1170282}).json()["clients"]
    assert [c["id"] for c in listed] == [first_client(emu)]
    assert set(listed[0]) >= {
        "id",
        "platform_id",
        "client_type",
        "name",
        "created_at",
        "updated_at",
        "group",
        "tag",
    }


def test_load_clients_reports_per_item_and_finds_existing(emu: SalebotEmulator) -> None:
    items = [
        {"platform_id": "79001234567@s.whatsapp.net", "group_id": "wa_main", "client_type": 6},
        {"platform_id": 555, "group_id": "143414131"},
        {"platform_id": 556, "group_id": "", "client_type": 13},
        {"platform_id": 557, "group_id": "143414131", "client_type": 0},
    ]
    result = call(emu, "load_clients", items).json()["items"]
    assert [i["status"] for i in result] == ["success", "error", "success", "success"]
    assert result[0]["id"] == first_client(emu), "the existing WhatsApp client is found, not duplicated"
    assert "client_type" in result[1]["message"]
    assert emu.client(result[3]["id"]).platform_id == "557"


def test_create_order_priority_and_client_creation(emu: SalebotEmulator) -> None:
    cid = first_client(emu)
    order = call(emu, "create_order", {"client_id": cid, "phone": "70000000001", "state_id": 102}).json()[
        "order_id"
    ]
    assert emu.deal(order).client_id == cid
    assert emu.deal(order).state_id == 102
    before = len(emu.state.clients)
    order = call(emu, "create_order", {"phone": "+7 900 123-45-67", "email": "x@y.z"}).json()["order_id"]
    assert emu.deal(order).client_id == cid, "found by phone"
    order = call(emu, "create_order", {"email": "brand.new@example.com"}).json()["order_id"]
    assert len(emu.state.clients) == before + 1
    assert emu.client(emu.deal(order).client_id).platform_id == "brand.new@example.com"


def test_deal_funnel_moves_and_status(emu: SalebotEmulator) -> None:
    cid = first_client(emu)
    assert call(emu, "move_order_to_next_state", {"client_id": cid}).json()["state_id"] == 102
    call(emu, "set_order_state", {"client_id": cid, "state_id": 104})
    order = call(emu, "get_current_order_id", {"client_id": cid}).json()["order_id"]
    assert emu.deal(order).status == 1
    assert call(emu, "get_orders", {"client_id": cid, "order_status": 1}).json()["order_id"] == [order]
    assert call(emu, "get_orders", {"client_id": cid, "order_status": 0}).json()["order_id"] == []


def test_deal_moves_on_its_own(emu: SalebotEmulator) -> None:
    now = [1_000_000.0]
    emu.clock = lambda: now[0]
    cid = first_client(emu)
    order = call(emu, "get_current_order_id", {"client_id": cid}).json()["order_id"]
    emu.auto_advance(order, every=60)
    assert call(emu, "get_order_state", {"client_id": cid}).json()["state_id"] == 101
    now[0] += 61
    assert call(emu, "get_order_state", {"client_id": cid}).json()["state_id"] == 102
    now[0] += 120
    assert call(emu, "get_order_state", {"client_id": cid, "order_id": order}).json()["state_id"] == 104


def test_outbox_honours_time_shift_send_time_and_shift(emu: SalebotEmulator) -> None:
    now = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    emu.clock = lambda: now
    cid = first_client(emu)
    call(emu, "message", {"client_id": cid, "message": "later", "time_shift": 90})
    call(emu, "message", {"client_id": cid, "message": "at", "send_time": "2023-11-15 09:00:00"})
    emu.seed_clients(3, with_deals=False)
    recipients = list(emu.state.clients)[-3:]
    call(emu, "broadcast", {"clients": recipients, "message": "sale", "shift": 2, "time_shift": 10})
    outbox = emu.outbox
    assert outbox[0].due_at == now + 90
    assert outbox[1].due_at == 1_700_028_000.0  # 09:00 Moscow is 06:00 UTC
    assert [(o.client_id, o.due_at) for o in outbox[2:]] == [
        (c, now + 10 + 2 * i) for i, c in enumerate(recipients)
    ]
    assert all(o.kind == "broadcast" for o in outbox[2:])


def test_callback_saves_extra_fields_as_variables(emu: SalebotEmulator) -> None:
    cid = first_client(emu)
    call(emu, "callback", {"client_id": cid, "message": "paid", "order_sum": 1500, "resume_bot": True})
    assert emu.client(cid).variables["order_sum"] == 1500
    assert "message" not in emu.client(cid).variables
    assert emu.outbox[-1].kind == "callback"


def test_history_dates_and_limit(emu: SalebotEmulator) -> None:
    cid = first_client(emu)
    with emu.state.lock:
        emu.state.history[cid] = []
        for day in range(1, 6):
            emu.state.add_history(
                cid, f"day {day}", client_replica=True, created_at=MOSCOW_2024_01_01 + (day - 1) * 86_400 + 60
            )
    result = call(
        emu, "get_history", {"client_id": cid, "start_date": "02.01.2024", "stop_date": "03.01.2024"}
    ).json()
    assert [m["text"] for m in result["result"]] == ["day 2", "day 3"]
    assert len(call(emu, "get_history", {"client_id": cid, "limit": 2}).json()["result"]) == 2
    assert call(emu, "get_history", {"client_id": cid, "start_date": "02.01.2024"}).json()["status"] == "fail"


# ------------------------------------------------------------------------------------- faults


def test_faults_replay_the_same_under_the_same_seed() -> None:
    def rolls(seed: int) -> list[bool]:
        faults = Faults(seed)
        faults.add(Fault(status=503, rate=0.5))
        return [faults.decide("get_clients").failure is not None for _ in range(40)]

    assert rolls(1) == rolls(1)
    assert rolls(1) != rolls(2)
    assert 10 < sum(rolls(1)) < 30


def test_latency_range_is_drawn_within_bounds() -> None:
    faults = Faults(0)
    faults.add(Fault(action="message", latency=(0.1, 0.3)))
    waits = [faults.decide("message").latency for _ in range(20)]
    assert all(0.1 <= w <= 0.3 for w in waits)
    assert faults.decide("get_clients").latency == 0


def test_a_fault_can_let_requests_pass_first() -> None:
    faults = Faults(0)
    faults.add(Fault(action="broadcast", status=502, after=2, times=1))
    hit = [faults.decide("broadcast").failure is not None for _ in range(5)]
    assert hit == [False, False, True, False, False]
    assert faults.decide("message").failure is None


@pytest.mark.parametrize("after", [-1, 1.5, True, "2"])
def test_a_bad_after_is_refused(after: object) -> None:
    with pytest.raises(ValueError, match="Fault after must be a whole number"):
        Fault(status=500, after=after)  # type: ignore[arg-type]


def test_status_fault_before_processing(emu: SalebotEmulator) -> None:
    emu.inject("message", status=503, times=1)
    cid = first_client(emu)
    assert call(emu, "message", {"client_id": cid, "message": "x"}).status_code == 503
    assert emu.outbox == []
    assert call(emu, "message", {"client_id": cid, "message": "x"}).status_code == 200
    assert len(emu.outbox) == 1


def test_a_429_fault_can_carry_retry_after_and_is_not_processed(emu: SalebotEmulator) -> None:
    emu.inject("message", status=429, retry_after=2, times=1)
    cid = first_client(emu)
    reply = call(emu, "message", {"client_id": cid, "message": "x"})
    assert (reply.status_code, reply.headers.get("Retry-After")) == (429, "2")
    assert emu.outbox == []
    with pytest.raises(ValueError, match="retry_after goes with status=429"):
        Fault(status=503, retry_after=1)
    with pytest.raises(ValueError, match="retry_after must be whole seconds"):
        Fault(status=429, retry_after=0)


def test_a_request_held_across_a_reset_neither_acts_nor_shows_in_the_fresh_project(
    emu: SalebotEmulator,
) -> None:
    # A slow request of one test must not land in the next test's project (the fixture resets it).
    cid = first_client(emu)
    emu.inject("message", latency=0.5, times=1)
    replies: list[int] = []
    sender = threading.Thread(
        target=lambda: replies.append(call(emu, "message", {"client_id": cid, "message": "late"}).status_code)
    )
    sender.start()
    while not emu.faults.rules[0].hits:  # the request is in, held by the latency
        threading.Event().wait(0.01)
    emu.reset()
    sender.join(timeout=10)
    assert replies == [503]
    assert emu.outbox == []
    assert emu.requests == []


def test_processed_then_failed(emu: SalebotEmulator) -> None:
    emu.inject("broadcast", status=502, processed=True)
    reply = call(emu, "broadcast", {"list": 1170282, "message": "sale"})
    assert reply.status_code == 502
    assert len(emu.outbox) == 1, "the broadcast went out although the reply was a 502"


def test_html_page_and_invalid_json(emu: SalebotEmulator) -> None:
    emu.inject("get_clients", html=True, times=1)
    emu.inject("get_clients", invalid_json=True, times=1)
    first = call(emu, "get_clients", {})
    assert first.status_code == 502
    assert first.text.startswith("<html>")
    second = call(emu, "get_clients", {})
    assert second.status_code == 200
    with pytest.raises(requests.JSONDecodeError):
        second.json()


def test_reset_closes_the_connection(emu: SalebotEmulator) -> None:
    emu.inject("get_messages", reset=True, times=1)
    with pytest.raises(requests.ConnectionError):
        call(emu, "get_messages", {})
    assert call(emu, "get_messages", {}).status_code == 200
    assert [r.status for r in emu.requests] == [0, 200]


def test_rate_limit_answers_429_with_retry_after(emu: SalebotEmulator) -> None:
    emu.rate_limit(0.5, "get_messages")
    assert call(emu, "get_messages", {}).status_code == 200
    limited = call(emu, "get_messages", {})
    assert limited.status_code == 429
    assert int(limited.headers["Retry-After"]) >= 1
    assert call(emu, "connected_channels", {}).status_code == 200


def test_fault_fields_are_checked() -> None:
    with pytest.raises(ValueError, match="rate"):
        Fault(rate=2)
    with pytest.raises(ValueError, match="status"):
        Fault(status=200)


def test_requests_log_keeps_no_key(emu: SalebotEmulator) -> None:
    call(emu, "get_variables", {"client_id": first_client(emu)})
    call(emu, "save_variables", {"client_id": first_client(emu), "variables": {"a": 1}})
    log = emu.requests
    assert [(r.action, r.method, r.status) for r in log] == [
        ("get_variables", "GET", 200),
        ("save_variables", "POST", 200),
    ]
    assert log[0].params == {"client_id": str(first_client(emu))}
    assert log[1].body == {"client_id": first_client(emu), "variables": {"a": 1}}
    assert emu.api_key not in repr(log)


def test_reset_restores_the_starting_project(emu: SalebotEmulator) -> None:
    emu.seed_clients(5)
    emu.inject(status=500)
    emu.reset()
    assert emu.state.clients == {}
    assert emu.faults.rules == []
    assert emu.requests == []


def test_seeding_is_deterministic() -> None:
    a, b = SalebotEmulator(clients=200, seed=7), SalebotEmulator(clients=200, seed=7)
    assert [(c.name, c.platform_id, c.variables) for c in a.state.clients.values()] == [
        (c.name, c.platform_id, c.variables) for c in b.state.clients.values()
    ]
    c = SalebotEmulator(clients=200, seed=8)
    assert [x.name for x in a.state.clients.values()] != [x.name for x in c.state.clients.values()]


# ------------------------------------------------------------------------------------- admin API


def test_admin_api(emu: SalebotEmulator) -> None:
    admin = f"{emu.base_url}/_emulator"
    assert requests.post(f"{admin}/seed", json={"clients": 10}, timeout=5).json() == {"seeded": 10}
    assert requests.get(f"{admin}/state", timeout=5).json()["clients"] == 14
    cid = first_client(emu)
    call(emu, "message", {"client_id": cid, "message": "hi"})
    assert requests.get(f"{admin}/outbox", timeout=5).json()[0]["text"] == "hi"
    assert requests.get(f"{admin}/requests", timeout=5).json()[-1]["action"] == "message"
    client = requests.get(f"{admin}/clients/{cid}", timeout=5).json()
    assert client["deals"][0]["variables"] == {"stage": "new"}
    fault = requests.post(
        f"{admin}/faults", json={"action": "get_messages", "status": 504, "times": 1}, timeout=5
    )
    assert fault.json()["status"] == 504
    assert call(emu, "get_messages", {}).status_code == 504
    key = requests.post(f"{admin}/keys", json={"permissions": ["crm_read"]}, timeout=5).json()["key"]
    assert call(emu, "get_messages", {}, key=key).status_code == 403
    deal = client["deals"][0]["id"]
    assert requests.post(f"{admin}/deals/{deal}/auto_advance", json={"every": 3600}, timeout=5).ok
    assert requests.get(f"{admin}/deals/{deal}", timeout=5).json()["state_id"] == 101
    assert requests.post(f"{admin}/faults", json={"colour": "red"}, timeout=5).status_code == 400
    assert requests.get(f"{admin}/nowhere", timeout=5).status_code == 404
    assert requests.post(f"{admin}/reset", timeout=5).json() == {"reset": True}
    assert requests.get(f"{admin}/state", timeout=5).json()["clients"] == 0


def test_connection_strings(emu: SalebotEmulator) -> None:
    from airflow.models.connection import Connection

    conn = json.loads(emu.connection_json(timeout=3))
    assert conn == {
        "conn_type": "salebot",
        "host": emu.base_url,
        "password": emu.api_key,
        "extra": {"timeout": 3},
    }
    parsed = Connection(conn_id="x", uri=emu.connection_uri())
    assert (parsed.conn_type, parsed.host, parsed.port, parsed.password) == (
        "salebot",
        "http://127.0.0.1",
        emu.port,
        emu.api_key,
    )


# ------------------------------------------------------------------------------------- review fixes


def test_concurrent_calls_keep_the_state_whole(emu: SalebotEmulator) -> None:
    ids = emu.seed_clients(40, with_deals=False)
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            with requests.Session() as s:
                for i in range(25):
                    cid = ids[(n * 25 + i) % len(ids)]
                    base = f"{emu.base_url}/api/{emu.api_key}"
                    assert s.post(
                        f"{base}/message", json={"client_id": cid, "message": f"{n}-{i}"}, timeout=5
                    ).ok
                    variables = {"client.n": n, f"client.t{n}": i}
                    assert s.post(
                        f"{base}/save_variables", json={"client_id": cid, "variables": variables}, timeout=5
                    ).ok
                    assert s.get(f"{base}/get_clients", params={"limit": 10}, timeout=5).ok
        except BaseException as exc:  # collected for the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    outbox = emu.outbox
    assert len(outbox) == 200
    assert len({item.id for item in outbox}) == 200
    assert sorted(o.text for o in outbox) == sorted(f"{n}-{i}" for n in range(8) for i in range(25))
    assert len(emu.requests) == 600
    assert {r.status for r in emu.requests} == {200}


def test_stop_closes_kept_alive_connections() -> None:
    emulator = SalebotEmulator().start()
    session = requests.Session()
    target = f"{emulator.base_url}/api/{emulator.api_key}/get_messages"
    assert session.get(target, timeout=5).ok
    emulator.stop()
    with pytest.raises(requests.ConnectionError):
        session.get(target, timeout=5)


def test_key_with_url_characters_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    from salebot_provider.hooks import SalebotHook

    with SalebotEmulator(api_key="k/ey+with space") as emulator:
        for conn in (emulator.connection_json(), emulator.connection_uri()):
            monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", conn)
            assert SalebotHook().get_messages()["status"] == "success"


def test_a_handler_bug_is_a_500_reply(emu: SalebotEmulator, monkeypatch: pytest.MonkeyPatch) -> None:
    from salebot_provider.testing import handlers

    def broken(state: Any, p: Any) -> Any:
        raise ZeroDivisionError("oops")

    monkeypatch.setitem(handlers.HANDLERS, "get_messages", broken)
    reply = call(emu, "get_messages", {})
    assert reply.status_code == 500
    assert "ZeroDivisionError" in reply.json()["message"]


def test_fault_kinds_combine_as_documented(emu: SalebotEmulator) -> None:
    with pytest.raises(ValueError, match="processed"):
        Fault(processed=True)
    emu.inject("get_messages", html=True, status=504, times=1)
    page = call(emu, "get_messages", {})
    assert page.status_code == 504
    assert "<html>" in page.text


def test_a_429_does_not_use_up_a_fault(emu: SalebotEmulator) -> None:
    emu.clock = lambda: 1_700_000_000.0  # time stands still but for advance()
    emu.rate_limit(1, "get_messages")
    emu.inject("get_messages", status=503, times=1)
    assert call(emu, "get_messages", {}).status_code == 503
    assert call(emu, "get_messages", {}).status_code == 429
    emu.advance(1)
    assert call(emu, "get_messages", {}).status_code == 200


def test_rate_limit_lets_a_burst_through(emu: SalebotEmulator) -> None:
    emu.clock = lambda: 1_700_000_000.0
    emu.rate_limit(5)
    statuses = [call(emu, "get_messages", {}).status_code for _ in range(7)]
    assert statuses == [200] * 5 + [429] * 2
    emu.advance(0.2)
    assert call(emu, "get_messages", {}).status_code == 200


def test_a_closed_deal_stays_closed(emu: SalebotEmulator) -> None:
    cid = first_client(emu)
    call(emu, "set_order_state", {"client_id": cid, "state_id": 104})
    assert call(emu, "move_order_to_next_state", {"client_id": cid}).json()["state_id"] == 104
    order = call(emu, "get_current_order_id", {"client_id": cid}).json()["order_id"]
    emu.auto_advance(order, every=1)
    emu.advance(10)
    assert emu.deal(order).state_id == 104


def test_callback_by_platform_id_reaches_every_match(emu: SalebotEmulator) -> None:
    twin = emu.add_client("2568652", 1, "other_bot")
    call(emu, "send_callback_by_platform_id", {"platform_ids": ["2568652"], "callback_text": "hi"})
    assert len({o.client_id for o in emu.outbox}) == 2
    assert twin in {o.client_id for o in emu.outbox}


def test_whatsapp_sends_go_to_a_whatsapp_client(emu: SalebotEmulator) -> None:
    telegram = emu.add_client("111", 1, "shop_bot", variables={"phone": "79007770000"})
    call(emu, "whatsapp_message", {"phone": "+7 900 777-00-00", "message": "hi"})
    target = emu.client(emu.outbox[-1].client_id or 0)
    assert target.client_type == 6
    assert target.id != telegram
    call(emu, "whatsapp_callback", {"phone": "79007770000"})
    assert emu.outbox[-1].client_id == target.id
    with emu.state.lock:
        emu.state.channels["whatsapp"] = []
    assert call(emu, "whatsapp_callback", {"phone": "79007770000"}).json()["status"] == "fail"


def test_find_clients_format_and_number_errors(emu: SalebotEmulator) -> None:
    assert call(emu, "find_clients", {"q": {"city": {"_in": 5}}}).json()["status"] == "fail"
    emu.add_client("1", variables={"age": "unknown"})
    emu.add_client("2", variables={"age": 30})
    assert call(emu, "find_clients", {"q": {"age": 30}}).json() == {
        "status": "fail",
        "message": "Something went wrong",
    }
    assert call(emu, "find_clients", {"q": {"age": "30"}}).json()["status"] == "success"


def test_scheduled_messages_reach_history_when_due(emu: SalebotEmulator) -> None:
    cid = first_client(emu)
    call(emu, "message", {"client_id": cid, "message": "tomorrow", "time_shift": 86_400})
    texts = lambda: [m["text"] for m in call(emu, "get_history", {"client_id": cid}).json()["result"]]  # noqa: E731
    assert "tomorrow" not in texts()
    emu.advance(86_401)
    assert "tomorrow" in texts()


def test_message_id_is_a_block_of_the_bot(emu: SalebotEmulator) -> None:
    cid = first_client(emu)
    assert call(emu, "broadcast", {"clients": [cid], "message_id": 999}).json()["status"] == "fail"
    assert call(emu, "broadcast", {"clients": [cid], "message_id": 392}).json()["status"] == "success"
    assert emu.outbox[-1].text == "Скидка 20% до пятницы"
    assert (
        call(emu, "message", {"client_id": cid, "message": "hi", "message_id": 999}).json()["status"]
        == "fail"
    )
    assert (
        call(emu, "message", {"client_id": cid, "message": "hi", "message_id": 392}).json()["status"]
        == "success"
    )
    assert (emu.outbox[-1].text, emu.outbox[-1].message_id) == ("hi", 392)


@pytest.mark.parametrize("action", ["message", "whatsapp_message"])
@pytest.mark.parametrize(
    "content",
    [{"message_id": 392}, {"message": ""}, {"message": "  \n"}, {"message": "", "message_id": 392}, {}],
)
def test_message_needs_text_or_a_file_as_the_vendor_documents(
    emu: SalebotEmulator, action: str, content: dict[str, Any]
) -> None:
    to = {"client_id": first_client(emu)} if action == "message" else {"phone": "79001234567"}
    reply = call(emu, action, {**to, **content})
    assert reply.status_code == 200
    assert reply.json() == {"status": "fail", "message": 'Parameter "message" required (or an attachment)'}
    assert emu.outbox == []
    photo = {"attachment_type": "image", "attachment_url": "https://example.com/a.png"}
    assert call(emu, action, {**to, **content, **photo}).json()["status"] == "success"
    assert emu.outbox[-1].attachment == {"type": "image", "url": "https://example.com/a.png"}


def test_project_time_zone() -> None:
    with SalebotEmulator(timezone="Asia/Yekaterinburg", clock=lambda: 1_700_000_000.0) as emulator:
        assert json.loads(emulator.connection_json())["extra"] == {"timezone": "Asia/Yekaterinburg"}
        cid = emulator.add_client("5")
        call(emulator, "message", {"client_id": cid, "message": "x", "send_time": "2023-11-15 11:00:00"})
        assert emulator.outbox[0].due_at == 1_700_028_000.0  # 11:00 in Yekaterinburg is 06:00 UTC


def test_an_unknown_time_zone_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown time zone 'Europe/Moskva'"):
        SalebotEmulator(timezone="Europe/Moskva")


def test_seeded_clients_do_not_depend_on_the_clock() -> None:
    early = SalebotEmulator(clients=20, seed=4, clock=lambda: 1_600_000_000.0)
    late = SalebotEmulator(clients=20, seed=4, clock=lambda: 1_800_000_000.0)
    assert [c.public(1) for c in early.state.clients.values()] == [
        c.public(1) for c in late.state.clients.values()
    ]


def test_admin_api_builds_the_stage(emu: SalebotEmulator) -> None:
    admin = f"{emu.base_url}/_emulator"
    cid = requests.post(
        f"{admin}/clients", json={"platform_id": "77", "name": "Ann", "variables": {"a": 1}}, timeout=5
    )
    client_id = cid.json()["id"]
    list_id = requests.post(f"{admin}/lists", json={"clients": [client_id]}, timeout=5).json()["list_id"]
    assert [c["id"] for c in call(emu, "get_clients", {"list": list_id}).json()["clients"]] == [client_id]
    assert requests.post(f"{admin}/clients/{client_id}/messages", json={"text": "привет"}, timeout=5).ok
    assert call(emu, "get_history", {"client_id": client_id}).json()["result"][0]["client_replica"] is True
    before = requests.get(f"{admin}/state", timeout=5).json()["time"]
    after = requests.post(f"{admin}/clock", json={"advance": 3600}, timeout=5).json()["time"]
    assert after - before >= 3600
    assert requests.get(f"{admin}/clients/1", timeout=5).status_code == 404
    assert (
        requests.post(f"{admin}/rate_limit", json={"per_second": 1, "action": "nope"}, timeout=5).status_code
        == 400
    )


def test_new_deals_can_move_along_the_funnel_on_their_own(emu: SalebotEmulator) -> None:
    emu.auto_advance_new_deals(60)
    cid = first_client(emu)
    order_id = call(emu, "create_order", {"client_id": cid}).json()["order_id"]
    emu.advance(125)
    assert call(emu, "get_order_state", {"client_id": cid, "order_id": order_id}).json()["state_id"] == 103
    with pytest.raises(ValueError, match="auto_advance_new_deals"):
        emu.auto_advance_new_deals(0)
    emu.auto_advance_new_deals(None)
    later = call(emu, "create_order", {"client_id": cid}).json()["order_id"]
    emu.advance(600)
    assert emu.deal(later).state_id == 101
