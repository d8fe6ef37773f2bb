"""SalebotHook against requests-mock: every action on the wire, every input rule, replies, retries."""

from __future__ import annotations

import datetime as dt
import inspect
import json
from typing import Any

import pytest
import requests
import requests_mock as rm

from salebot_provider import api
from salebot_provider.exceptions import (
    SalebotAPIError,
    SalebotConnectionError,
    SalebotNotFoundError,
    SalebotPermissionError,
    SalebotValidationError,
)
from salebot_provider.hooks import SalebotHook
from tests.conftest import API_KEY, BASE_URL, url
from tests.samples import CATALOG_ACTIONS, SAMPLES

ANY_ACTION = rm.ANY


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Record the retry waits instead of sleeping."""
    waits: list[float] = []
    monkeypatch.setattr("time.sleep", waits.append)
    return waits


# ------------------------------------------------------------------------------------- coverage


def test_hook_has_a_method_for_each_of_the_41_actions() -> None:
    assert len(SAMPLES) == 41
    for name in CATALOG_ACTIONS:
        assert callable(getattr(SalebotHook, name)), name


@pytest.mark.parametrize("name", CATALOG_ACTIONS)
def test_method_signature_matches_the_table(name: str) -> None:
    action = api.ACTIONS[name]
    signature = inspect.signature(getattr(SalebotHook, name))
    expected = {"list_id" if p.name == "list" else p.name for p in action.params} | {"self"}
    if action.extra:
        expected.add("extra")
    assert set(signature.parameters) == expected
    for p in action.params:
        python_name = "list_id" if p.name == "list" else p.name
        has_default = signature.parameters[python_name].default is not inspect.Parameter.empty
        assert has_default is (not p.required), python_name
    assert f"``{action.permission}``" in (getattr(SalebotHook, name).__doc__ or "")


@pytest.mark.parametrize("name", CATALOG_ACTIONS)
def test_each_action_reaches_its_url_with_its_method_and_parameters(
    hook: SalebotHook, requests_mock: rm.Mocker, name: str
) -> None:
    args, kwargs, wire = SAMPLES[name]
    reply = {"status": "success", "answer": name}
    requests_mock.register_uri(rm.ANY, url(name), json=reply)
    assert getattr(hook, name)(*args, **kwargs) == reply
    request = requests_mock.last_request
    assert requests_mock.call_count == 1
    assert request.method == api.ACTIONS[name].method
    assert request.url.split("?")[0] == url(name)
    if request.method == "GET":
        assert {k: v for k, v in request.qs.items()} == {
            k.lower(): [x.lower() for x in v] for k, v in wire.items()
        }
        assert not request.body
    else:
        assert request.qs == {}
        assert request.headers["Content-Type"] == "application/json"
        assert json.loads(request.body) == wire


def test_case_of_query_values_is_kept(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(url("find_client_id_by_var"), json={"status": "success"})
    hook.find_client_id_by_var("City", "Kazan")
    assert "var=City&val=Kazan" in requests_mock.last_request.url


# ------------------------------------------------------------------------------------- input rules

RULES: list[tuple[str, dict[str, Any], str]] = [
    ("broadcast", {"message": "x"}, "exactly one of list \\(list_id\\), clients, platform_ids; got none"),
    ("broadcast", {"list_id": 1, "clients": [1], "message": "x"}, "exactly one of"),
    ("broadcast", {"platform_ids": [1], "message": "x"}, "'group_id' is required with 'platform_ids'"),
    (
        "broadcast",
        {"list_id": 1, "group_id": "bot", "message": "x"},
        "'group_id' applies only with 'platform_ids'",
    ),
    ("broadcast", {"list_id": 1}, "give 'message', an attachment"),
    (
        "broadcast",
        {"list_id": 1, "attachment_url": "http://x/a.png"},
        "'attachment_url' and 'attachment_type' go together",
    ),
    ("broadcast", {"list_id": 1, "attachment_type": "image", "message": "x"}, "go together"),
    (
        "broadcast",
        {"list_id": 1, "attachment_type": "gif", "attachment_url": "u"},
        "'attachment_type' must be one of image, video",
    ),
    ("broadcast", {"clients": [], "message": "x"}, "'clients' must not be empty"),
    ("broadcast", {"clients": "1,2", "message": "x"}, "'clients' must be a list"),
    ("broadcast", {"clients": [1, "x"], "message": "x"}, "'clients\\[1\\]' must be an integer id"),
    ("broadcast", {"list_id": 1, "message": "x", "shift": -1}, "'shift' must be a non-negative"),
    ("message", {"client_id": 1}, "parameter 'message' is required unless a file is sent"),
    ("message", {"client_id": 1, "message_id": 5}, "'message_id' alone is not enough"),
    ("message", {"client_id": 1, "message": "x", "time_shift": -5}, "'time_shift' must be a non-negative"),
    (
        "message",
        {"client_id": 1, "message": "x", "time_shift": "soon"},
        "'time_shift' must be a finite number",
    ),
    (
        "message",
        {"client_id": 1, "message": "x", "time_shift": 5, "send_time": "2024-10-16 13:15:59"},
        "not both",
    ),
    (
        "message",
        {"client_id": 1, "message": "x", "send_time": "2024-10-16T13:15:59"},
        "'send_time' must be a datetime",
    ),
    ("message", {"client_id": 1, "message": 5}, "'message' must be a string"),
    ("message", {"client_id": True, "message": "x"}, "'client_id' must be an integer id"),
    ("message", {"client_id": None, "message": "x"}, "'client_id' is required"),
    ("message", {"client_id": 1, "message": "x", "buttons": "yes"}, "'buttons' must be a dict"),
    ("whatsapp_message", {"phone": "7900"}, "parameter 'message' is required"),
    ("whatsapp_message", {"phone": "7900", "message_id": 5}, "'message_id' alone is not enough"),
    ("get_history", {"client_id": 1, "start_date": "01.01.2024"}, "'start_date' and 'stop_date' go together"),
    (
        "get_history",
        {"client_id": 1, "start_date": "2024-01-01", "stop_date": "02.01.2024"},
        "'start_date' must be a date",
    ),
    ("get_history", {"client_id": 1, "start_date": "05.01.2024", "stop_date": "02.01.2024"}, "is after"),
    ("get_history", {"client_id": 1, "limit": 2001}, "'limit' must be at most 2000"),
    ("get_history", {"client_id": 1, "limit": 0}, "'limit' must be at least 1"),
    ("get_clients", {"limit": 501}, "'limit' must be at most 500"),
    ("get_clients", {"list_id": 3, "reverse": True}, "'reverse' works only without list"),
    ("get_clients", {"offset": -1}, "'offset' must be a non-negative id"),
    ("get_orders", {"client_id": 1, "order_status": 3}, "'order_status' must be one of 0, 1, 2"),
    ("get_orders", {"client_id": 1, "order_status": "3"}, "'order_status' must be one of 0, 1, 2"),
    ("find_all_client_id_by_several_vars", {"variables": {"a": 1, "b": 2, "c": 3, "d": 4}}, "at most 3"),
    ("find_all_client_id_by_several_vars", {"variables": {}}, "'variables' must not be empty"),
    ("find_clients", {"q": None}, "'q' is required"),
    ("find_clients", {"q": {}}, "'q' must not be empty"),
    ("find_clients", {"q": {"a": 1}, "search_in": "deal"}, "'search_in' must be one of order"),
    ("find_client_id_by_var", {"var": "a", "val": None}, "'val' is required"),
    ("callback", {"message": "x"}, "exactly one of client_id, client_phone, client_email; got none"),
    ("callback", {"client_id": 1, "client_email": "a@b", "message": "x"}, "got client_id, client_email"),
    ("callback", {"client_id": 1, "extra": {"message": "dup"}}, "'extra' field 'message' collides"),
    ("tg_callback", {"user_id": "", "group_id": "bot"}, "'user_id' must be a non-empty string"),
    (
        "send_callback_by_platform_id",
        {"platform_ids": list(range(301)), "callback_text": "x"},
        "at most 300.*iter_chunked",
    ),
    ("delete_clients", {"client_ids": list(range(501))}, "at most 500.*iter_chunked"),
    ("save_variables", {"variables": {"a": 1}}, "exactly one of client_id, clients"),
    ("save_variables", {"client_id": 1, "clients": [2], "variables": {"a": 1}}, "exactly one of"),
    ("save_variables", {"client_id": 1, "variables": {"": 1}}, "key that is not a non-empty string"),
    ("save_variables", {"client_id": 1, "variables": {"a": object()}}, "cannot be sent as JSON"),
    ("get_order_vars", {"client_id": 1, "variables": [""]}, "'variables\\[0\\]' must be a variable name"),
    ("set_order_vars", {"client_id": 1, "variables": {}}, "'variables' must not be empty"),
    ("create_order", {"name": "deal"}, "at least one of client_id, phone, email"),
    ("create_order", {"client_id": 1, "budget": float("nan")}, "'budget' must be a finite number"),
    (
        "load_clients",
        {"clients": [{"platform_id": 1, "group_id": 2}]},
        "'clients\\[0\\]' lacks 'client_type'",
    ),
    (
        "load_clients",
        {"clients": [{"platform_id": 1, "group_id": 2, "client_type": 0}, "x"]},
        "'clients\\[1\\]' must be a dict",
    ),
    ("add_to_list", {"list_id": "abc", "clients": [1]}, "'list_id' must be an integer id"),
]


@pytest.mark.parametrize(("name", "kwargs", "message"), RULES)
def test_bad_input_is_refused_before_any_request(
    hook: SalebotHook, requests_mock: rm.Mocker, name: str, kwargs: dict[str, Any], message: str
) -> None:
    requests_mock.register_uri(rm.ANY, rm.ANY, json={"status": "success"})
    with pytest.raises(SalebotValidationError, match=message) as info:
        getattr(hook, name)(**kwargs)
    assert name in str(info.value)
    assert requests_mock.call_count == 0


def test_every_action_with_a_required_parameter_refuses_it_missing(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    requests_mock.register_uri(rm.ANY, rm.ANY, json={"status": "success"})
    checked = 0
    for action in api.ACTIONS.values():
        for p in action.params:
            if p.required:
                args, kwargs, _ = SAMPLES[action.name]
                bound = inspect.signature(getattr(hook, action.name)).bind(*args, **kwargs).arguments
                bound[p.name if p.name != "list" else "list_id"] = None
                with pytest.raises(SalebotValidationError, match=f"'{p.name}' is required"):
                    getattr(hook, action.name)(**bound)
                checked += 1
    assert checked > 40
    assert requests_mock.call_count == 0


# ------------------------------------------------------------------------------------- replies


@pytest.mark.parametrize(
    ("status", "body", "error"),
    [
        (200, {"status": "fail", "message": "Something went wrong"}, SalebotAPIError),
        (200, {"status": "client_not_found"}, SalebotNotFoundError),
        (200, {"status": "order not found"}, SalebotNotFoundError),
        (404, "", SalebotNotFoundError),
        (403, {"status": "error", "message": "WRONG_ACTION"}, SalebotPermissionError),
        (500, "Internal Server Error", SalebotAPIError),
        (502, "<html><head><title>502 Bad Gateway</title></head></html>", SalebotAPIError),
        (200, "<!DOCTYPE html><html>maintenance</html>", SalebotAPIError),
        (200, '{"status": "success", "order_id": ', SalebotAPIError),
    ],
)
def test_failed_reply_raises(
    hook: SalebotHook, requests_mock: rm.Mocker, status: int, body: Any, error: type, sleeps: list[float]
) -> None:
    text = body if isinstance(body, str) else json.dumps(body)
    requests_mock.post(url("create_order"), status_code=status, text=text)
    with pytest.raises(error) as info:
        hook.create_order(client_id=7)
    assert type(info.value) is error
    assert requests_mock.call_count == 1, "create_order is a send: never retried after this"
    assert API_KEY not in str(info.value)


def test_whatsapp_client_id_404_is_not_found(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(url("whatsapp_client_id"), status_code=404, text="")
    with pytest.raises(SalebotNotFoundError):
        hook.whatsapp_client_id("79000000000")
    assert requests_mock.call_count == 1


def test_wrong_action_names_the_missing_permission(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.post(
        url("set_order_state"), status_code=403, json={"status": "error", "message": "WRONG_ACTION"}
    )
    with pytest.raises(SalebotPermissionError, match="crm_write") as info:
        hook.set_order_state(7, 37)
    assert "Разрешение на изменение/удаление информации из CRM" in str(info.value)


# ------------------------------------------------------------------------------------- retries


def test_read_recovers_after_503_503(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.get(
        url("get_variables"),
        [
            {"status_code": 503, "text": "busy"},
            {"status_code": 503, "text": "busy"},
            {"json": {"city": "Kazan"}},
        ],
    )
    assert hook.get_variables(7) == {"city": "Kazan"}
    assert requests_mock.call_count == 3
    assert len(sleeps) == 2


def test_read_gives_up_after_max_retries(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.get(url("get_variables"), status_code=503, text="busy")
    with pytest.raises(SalebotAPIError, match="HTTP 503"):
        hook.get_variables(7)
    assert requests_mock.call_count == 3  # max_retries=2 in the test connection


def test_read_retries_a_malformed_reply(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.get(
        url("get_order_state"),
        [{"text": "<html>oops</html>"}, {"json": {"status": "success", "state_id": 3}}],
    )
    assert hook.get_order_state(7)["state_id"] == 3


def test_read_recovers_after_a_timeout(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.get(
        url("get_clients"),
        [{"exc": requests.exceptions.ReadTimeout}, {"json": {"status": "success", "clients": []}}],
    )
    assert hook.get_clients() == {"status": "success", "clients": []}
    assert requests_mock.call_count == 2


def test_send_is_tried_once_on_502(hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]) -> None:
    requests_mock.post(
        url("broadcast"), [{"status_code": 502, "text": "bad gateway"}, {"json": {"status": "success"}}]
    )
    with pytest.raises(SalebotAPIError) as info:
        hook.broadcast(list_id=1, message="sale")
    assert info.value.in_doubt is True
    assert requests_mock.call_count == 1


def test_send_is_not_retried_after_read_timeout(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(
        url("message"), [{"exc": requests.exceptions.ReadTimeout}, {"json": {"status": "success"}}]
    )
    with pytest.raises(SalebotConnectionError, match="may have been processed") as info:
        hook.message(7, message="hi")
    assert info.value.in_doubt is True
    assert requests_mock.call_count == 1


def test_send_recovers_after_429_with_retry_after(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(
        url("message"),
        [{"status_code": 429, "headers": {"Retry-After": "3"}, "text": ""}, {"json": {"status": "success"}}],
    )
    assert hook.message(7, message="hi") == {"status": "success"}
    assert requests_mock.call_count == 2
    assert sleeps == [3.0]


def test_send_retries_when_the_connection_never_opened(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(
        url("message"), [{"exc": requests.exceptions.ConnectTimeout}, {"json": {"status": "success"}}]
    )
    assert hook.message(7, message="hi") == {"status": "success"}
    assert requests_mock.call_count == 2


def test_backoff_grows_exponentially(
    salebot_conn: Any, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    salebot_conn(backoff_factor=1, max_retries=3)
    requests_mock.get(url("get_messages"), status_code=503, text="")
    with pytest.raises(SalebotAPIError):
        SalebotHook().get_messages()
    assert len(sleeps) == 3
    assert 1 <= sleeps[0] <= 2
    assert 2 <= sleeps[1] <= 3
    assert 4 <= sleeps[2] <= 5


def test_retry_after_is_capped(hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]) -> None:
    requests_mock.get(
        url("get_messages"), [{"status_code": 429, "headers": {"Retry-After": "86400"}}, {"json": {}}]
    )
    hook.get_messages()
    assert sleeps == [300.0]


# ------------------------------------------------------------------------------------- call()


def test_call_validates_a_known_action(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.register_uri(rm.ANY, rm.ANY, json={"status": "success"})
    with pytest.raises(SalebotValidationError, match="'client_id' is required"):
        hook.call("get_variables", {})
    assert requests_mock.call_count == 0
    hook.call("load_clients", [{"platform_id": 1, "group_id": 2, "client_type": 0}])
    assert requests_mock.last_request.json() == [{"platform_id": 1, "group_id": 2, "client_type": 0}]


def test_call_accepts_the_other_documented_method(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.post(url("check_whatsapp"), json={"status": "success"})
    hook.call("check_whatsapp", {"phone": "79000000000"}, method="POST")
    assert requests_mock.last_request.json() == {"phone": "79000000000"}


def test_call_unknown_get_is_retried(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.get(url("get_bots"), [{"status_code": 503}, {"json": {"status": "success", "bots": []}}])
    assert hook.call("get_bots", {"page": 1}, method="GET") == {"status": "success", "bots": []}
    assert requests_mock.last_request.qs == {"page": ["1"]}


def test_call_unknown_post_is_a_send(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(url("send_sms"), [{"status_code": 503}, {"json": {"status": "success"}}])
    with pytest.raises(SalebotAPIError):
        hook.call("send_sms", {"text": "x"})
    assert requests_mock.call_count == 1


# ------------------------------------------------------------------------------------- helpers


def test_iter_clients_pages_until_a_short_page(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    pages = [[{"id": i} for i in range(start, start + n)] for start, n in ((0, 2), (2, 2), (4, 1))]
    requests_mock.get(url("get_clients"), [{"json": {"status": "success", "clients": p}} for p in pages])
    assert [c["id"] for c in hook.iter_clients(page_size=2, list_id=5)] == [0, 1, 2, 3, 4]
    assert [r.qs for r in requests_mock.request_history] == [
        {"offset": [str(o)], "limit": ["2"], "list": ["5"]} for o in (0, 2, 4)
    ]


def test_iter_clients_stops_on_an_empty_page(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(
        url("get_clients"),
        [
            {"json": {"status": "success", "clients": [{"id": 1}]}},
            {"json": {"status": "success", "clients": []}},
        ],
    )
    assert list(hook.iter_clients(page_size=1)) == [{"id": 1}]
    assert requests_mock.call_count == 2


def test_iter_clients_remembers_only_the_last_pages(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    # Memory stays flat: only the clients of the last SEEN_PAGES pages are remembered. A repeat
    # within them is dropped; one from further back (a shift of more than three pages) is not.
    from salebot_provider.hooks import salebot

    pages = [[{"id": 100 - 2 * n}, {"id": 99 - 2 * n}] for n in range(salebot.SEEN_PAGES + 2)]
    pages[salebot.SEEN_PAGES - 1][1] = {"id": 100}  # first seen SEEN_PAGES - 1 pages back: dropped
    pages[salebot.SEEN_PAGES + 1][1] = {"id": 99}  # first seen SEEN_PAGES + 1 pages back: kept
    replies = [{"json": {"status": "success", "clients": page}} for page in pages]
    requests_mock.get(url("get_clients"), [*replies, {"json": {"status": "success", "clients": []}}])
    ids = [c["id"] for c in hook.iter_clients(page_size=2)]
    assert ids.count(100) == 1
    assert ids.count(99) == 2
    assert len(ids) == 2 * len(pages) - 1


def test_iter_clients_drops_repeats_and_stops_when_offset_is_ignored(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    shifted = [{"id": 5}, {"id": 4}]
    requests_mock.get(
        url("get_clients"),
        [
            {"json": {"status": "success", "clients": [{"id": 6}, {"id": 5}]}},
            {"json": {"status": "success", "clients": shifted}},  # a new client pushed 5 onto page 2
            {"json": {"status": "success", "clients": [{"id": 3}]}},
        ],
    )
    assert [c["id"] for c in hook.iter_clients(page_size=2)] == [6, 5, 4, 3]
    requests_mock.get(url("get_clients"), json={"status": "success", "clients": shifted})
    with pytest.raises(SalebotAPIError, match="ignore 'offset'"):
        list(hook.iter_clients(page_size=2))


def test_iter_clients_is_lazy_and_checks_its_arguments_first(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    requests_mock.get(url("get_clients"), json={"status": "success", "clients": []})
    with pytest.raises(SalebotValidationError, match=r"page_size.*1 to 500"):
        hook.iter_clients(page_size=1000)
    with pytest.raises(SalebotValidationError, match="page_size"):
        hook.iter_clients(page_size="100")  # type: ignore[arg-type]
    pages = hook.iter_clients()
    assert requests_mock.call_count == 0
    assert list(pages) == []


def test_iter_chunked_splits_at_the_documented_limit(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.post(url("send_callback_by_platform_id"), json={"status": "success"})
    ids = [str(i) for i in range(650)]
    results = list(hook.iter_chunked("send_callback_by_platform_id", ids, callback_text="hi"))
    assert [len(r.items) for r in results] == [300, 300, 50]
    sent = [r.json()["platform_ids"] for r in requests_mock.request_history]
    assert [i for chunk in sent for i in chunk] == ids
    assert all(r.json()["callback_text"] == "hi" for r in requests_mock.request_history)


def test_iter_chunked_refuses_a_size_over_the_limit(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    with pytest.raises(SalebotValidationError, match="at most 500"):
        hook.iter_chunked("delete_clients", [1, 2], chunk_size=501)


def test_iter_chunked_checks_every_item_before_the_first_request(
    hook: SalebotHook, requests_mock: rm.Mocker
) -> None:
    requests_mock.post(url("add_to_list"), json={"status": "success"})
    with pytest.raises(SalebotValidationError, match=r"clients\[3\]"):
        hook.iter_chunked("add_to_list", [1, 2, 3, "x"], chunk_size=3, list_id=9)
    with pytest.raises(SalebotValidationError, match="list_id"):
        hook.iter_chunked("add_to_list", iter([1, 2]), list_id="nine")
    assert requests_mock.call_count == 0


def test_iter_chunked_streams_a_generator(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.post(url("load_clients"), json={"status": "success", "items": []})
    rows = ({"platform_id": i, "group_id": "g", "client_type": 1} for i in range(5))
    results = list(hook.iter_chunked("load_clients", rows, chunk_size=2))
    assert [len(r.items) for r in results] == [2, 2, 1]
    assert isinstance(requests_mock.last_request.json(), list)


def test_failed_chunk_says_what_was_done_and_what_failed(
    hook: SalebotHook, requests_mock: rm.Mocker, sleeps: list[float]
) -> None:
    requests_mock.post(url("delete_clients"), [{"json": {"status": "success"}}, {"status_code": 502}])
    results = hook.iter_chunked("delete_clients", list(range(1, 8)), chunk_size=3)
    assert next(results).items == [1, 2, 3]
    with pytest.raises(SalebotAPIError) as info:
        next(results)
    assert info.value.failed_chunk == [4, 5, 6]
    assert info.value.items_done == 3
    assert info.value.in_doubt is True
    assert requests_mock.call_count == 2


def test_iter_chunked_needs_a_list_action(hook: SalebotHook) -> None:
    with pytest.raises(SalebotValidationError, match="no list parameter"):
        hook.iter_chunked("message", [1])


def test_iter_history_without_dates_is_one_call(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(url("get_history"), json={"status": "success", "result": [{"id": 1}]})
    assert list(hook.iter_history(5)) == [{"id": 1}]
    assert requests_mock.last_request.qs == {"client_id": ["5"], "limit": ["2000"]}


def test_iter_history_splits_a_full_window(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    def history(request: Any, context: Any) -> dict[str, Any]:
        start = dt.datetime.strptime(request.qs["start_date"][0], "%d.%m.%Y").date()
        stop = dt.datetime.strptime(request.qs["stop_date"][0], "%d.%m.%Y").date()
        days = (stop - start).days + 1
        count = 2000 if days > 2 else 700 * days  # 700 messages a day: a window over 2 days is full
        return {"status": "success", "result": [{"id": f"{start}-{i}"} for i in range(count)]}

    requests_mock.get(url("get_history"), json=history)
    items = list(hook.iter_history(5, dt.date(2024, 1, 1), dt.date(2024, 1, 8), window_days=8))
    windows = [(r.qs["start_date"][0], r.qs["stop_date"][0]) for r in requests_mock.request_history]
    assert windows[0] == ("01.01.2024", "08.01.2024")
    assert len(items) == 8 * 700
    assert len({i["id"] for i in items}) == len(items)


def test_iter_history_refuses_bad_window(hook: SalebotHook) -> None:
    with pytest.raises(SalebotValidationError, match="window_days"):
        hook.iter_history(5, "01.01.2024", "02.01.2024", window_days=0)


def test_rate_limit_spaces_calls(
    salebot_conn: Any, requests_mock: rm.Mocker, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [100.0]
    waits: list[float] = []
    monkeypatch.setattr("time.monotonic", lambda: clock[0])
    monkeypatch.setattr("time.sleep", waits.append)
    salebot_conn(rate_limit=4)
    requests_mock.get(url("get_messages"), json={})
    hook = SalebotHook()
    for _ in range(3):
        hook.get_messages()
    assert waits == [0.25, 0.5]


# ------------------------------------------------------------------------------------- connection


def test_connection_is_read_once_and_lazily(
    salebot_conn: Any, monkeypatch: pytest.MonkeyPatch, requests_mock: rm.Mocker
) -> None:
    calls = []
    original = SalebotHook.get_connection

    def counting(conn_id: str) -> Any:
        calls.append(conn_id)
        return original(conn_id)

    monkeypatch.setattr(SalebotHook, "get_connection", staticmethod(counting))
    requests_mock.get(url("get_messages"), json={})
    hook = SalebotHook()
    assert calls == []
    hook.get_messages()
    hook.get_messages()
    assert calls == ["salebot_default"]


def test_key_is_registered_with_the_secret_masker(hook: SalebotHook) -> None:
    from airflow.providers.common.compat.sdk import redact

    hook.settings  # noqa: B018
    assert redact(f"the key is {API_KEY}") == "the key is ***"


def test_test_connection_counts_channels(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(
        url("connected_channels"),
        json={
            "project_id": 1,
            "telegram": [{"id": 23}],
            "vkontakte": [{"id": 33}, {"id": 34}],
            "whatsapp": [],
        },
    )
    ok, message = hook.test_connection()
    assert ok is True
    assert "3 channels" in message
    assert "telegram 1" in message


def test_test_connection_reports_a_refused_key(hook: SalebotHook, requests_mock: rm.Mocker) -> None:
    requests_mock.get(url("connected_channels"), status_code=401, text=f"bad key {API_KEY}")
    ok, message = hook.test_connection()
    assert ok is False
    assert "not accepted" in message
    assert API_KEY not in message


def test_test_connection_reports_a_bad_connection(salebot_conn: Any) -> None:
    salebot_conn(host=f"{BASE_URL}/api/{API_KEY}")
    ok, message = SalebotHook().test_connection()
    assert ok is False
    assert "password" in message
    assert API_KEY not in message


def test_ui_field_behaviour_and_widgets() -> None:
    behaviour = SalebotHook.get_ui_field_behaviour()
    assert behaviour["relabeling"]["password"] == "API key"
    assert "login" in behaviour["hidden_fields"]
    widgets = SalebotHook.get_connection_form_widgets()
    assert set(widgets) == {
        "timeout",
        "max_retries",
        "backoff_factor",
        "rate_limit",
        "rate_limit_redis",
        "verify",
        "timezone",
    }


def test_connection_uri_form_with_a_scheme_in_the_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_DEFAULT", f"salebot://:{API_KEY}@http%3A%2F%2F127.0.0.1:8080?timeout=10"
    )
    settings = SalebotHook().settings
    assert settings.base_url == "http://127.0.0.1:8080"
    assert settings.timeout == 10
    assert settings.api_key == API_KEY


def test_bad_input_is_found_before_the_connection_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_SALEBOT_DEFAULT", raising=False)
    hook = SalebotHook()
    with pytest.raises(SalebotValidationError, match="parameter 'message' is required"):
        hook.message(1)
    assert "settings" not in vars(hook)


def test_aware_send_time_uses_the_connection_zone(salebot_conn: Any, requests_mock: rm.Mocker) -> None:
    salebot_conn(timezone="Asia/Novosibirsk")
    requests_mock.post(url("message"), json={"status": "success"})
    SalebotHook().message(1, message="x", send_time=dt.datetime(2024, 5, 1, 3, 0, tzinfo=dt.timezone.utc))
    assert requests_mock.last_request.json()["send_time"] == "2024-05-01 10:00:00"
