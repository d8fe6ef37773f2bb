"""
The API key occurs in no output, with DEBUG logging on every logger, in success and in failure.

Every operator and the sensor in its three modes run through ``dag.test()`` (the DAG file
``secret_dags/salebot_secrets_all.py``), once where everything succeeds and once where every task
fails: a 502, a processed-then-502, a reset, a 403 of a key without the permission, a 401 of a
wrong key, a read timeout, an HTML error page, invalid JSON, a 404. From each run the test collects
stdout and stderr, every log record (stdlib records and structlog events, taken raw, before any
masking by Airflow), the files the operators wrote, and every database row of the run: the XComs,
the rendered template fields, the task instances (``next_kwargs`` ...), the task state store, the
trigger rows (their kwargs decrypted too), the DAG run and its conf, the audit log. No form of any
key in play (plain, URL-encoded, JSON-escaped) is in any of it, and each collection is checked to
hold what the run did, so that the search is never vacuous.

``dag.test()`` runs tasks in this process and writes no task log files (Airflow 3.3: the in-process
supervisor logs to stdout, which ``capfd`` takes); the test checks that the run made no file under
``$AIRFLOW_HOME`` other than the database, so that a log file would not go unsearched.

The same holds for plain-Python use of ``SalebotHook`` and of ``OrderStateTrigger`` (a script, a
notebook: no Airflow secret masker in the way), with urllib3's, requests' and httpx's loggers at
DEBUG, in success and on every kind of failure: log records, stdout and stderr, the exceptions'
text, repr, attributes, formatted tracebacks and chained causes, the hook's repr, the trigger's
serialized kwargs and its events.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import logging
import os
import re
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote, quote_plus

import pytest

from tests.reliability.conftest import task_instances

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Iterator, Mapping

    from airflow.models.dagrun import DagRun
    from airflow.sdk import DAG

    from salebot_provider.testing import SalebotEmulator
    from tests.dags.conftest import RunDag

DAG_FILE = Path(__file__).with_name("secret_dags") / "salebot_secrets_all.py"
DAG_ID = "salebot_secrets_all"
TRIGGER = "salebot_provider.triggers.order_state.OrderStateTrigger"
OPERATOR_TASKS = (
    "broadcast",
    "load_clients",
    "save_variables",
    "add_to_list",
    "remove_from_list",
    "find_clients",
    "export_clients",
    "send_message",
    "callback",
    "create_order",
    "set_order_state",
    "set_order_vars",
    "get_order_vars",
)
SENSOR_TASKS = ("wait_poke", "wait_reschedule", "wait_deferred")
#: A key the emulator does not know, with characters that URL-encoding and JSON escaping change.
WRONG_KEY = "Wrong/key+with=odd&chars?#ä-0123456789abcdef"


# ------------------------------------------------------------------------------------ the search


def key_forms(key: str) -> set[str]:
    """The key as it is, URL-encoded (path and form style) and JSON-escaped."""
    escaped = json.dumps(key)[1:-1]
    return {
        key,
        quote(key, safe=""),
        quote(key),
        quote_plus(key),
        escaped,
        escaped.replace("/", "\\/"),
        json.dumps(key, ensure_ascii=False)[1:-1],
    }


def assert_no_key(keys: Iterable[str], texts: Mapping[str, str]) -> None:
    """Fail naming the output and the place where a form of a key occurs; never show the key."""
    forms = sorted({form for key in keys for form in key_forms(key)}, key=len, reverse=True)
    for name, text in texts.items():
        for form in forms:
            at = text.find(form)
            if at >= 0:
                context = text[max(0, at - 300) : at + len(form) + 300]
                for other in forms:
                    context = context.replace(other, "<KEY>")
                raise AssertionError(f"an API key leaked into {name}: ...{context}...")


# ------------------------------------------------------------------------------------ logs at DEBUG

#: Attributes every LogRecord has; anything else on a record came from ``extra=``.
_RECORD_ATTRIBUTES = set(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


def _exception_text(exc_info: Any) -> str:
    if exc_info is True:
        exc_info = sys.exc_info()
    if isinstance(exc_info, BaseException):
        return "".join(traceback.format_exception(exc_info))
    if isinstance(exc_info, tuple) and len(exc_info) == 3 and exc_info[1] is not None:
        return "".join(traceback.format_exception(exc_info[1]))
    return ""


class LogCapture(logging.Handler):
    """
    Every stdlib log record and every structlog event, raw: before any formatter or masker.

    A record is kept as its logger, level and message, its unformatted ``msg`` and ``args``, its
    ``extra`` attributes, and its exception with the whole chain of causes.
    """

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[str] = []
        self.events: list[str] = []
        self._events_lock = threading.Lock()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format in some library: keep what it was given
            message = "<unformattable>"
        parts = [f"{record.name} {record.levelname} {message}", repr(record.msg), repr(record.args)]
        parts.append(_exception_text(record.exc_info))
        parts += [record.exc_text or "", record.stack_info or ""]
        extras = {k: v for k, v in vars(record).items() if k not in _RECORD_ATTRIBUTES}
        if extras:
            parts.append(repr(extras))
        self.records.append("\n".join(parts))

    def structlog_processor(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        """The first processor of structlog's chain: keep the event as the caller gave it."""
        if is_airflow_mask_secret_echo(event_dict):
            return event_dict
        text = f"{method_name} {event_dict!r}\n{_exception_text(event_dict.get('exc_info'))}"
        with self._events_lock:
            self.events.append(text)
        return event_dict

    def texts(self) -> dict[str, str]:
        return {"log records": "\n".join(self.records), "structlog events": "\n".join(self.events)}


def is_airflow_mask_secret_echo(event_dict: Mapping[str, Any]) -> bool:
    """
    Airflow's own echo of a secret handed to ``mask_secret``, which the search leaves out.

    Under ``dag.test()``, ``InProcessSupervisorComms.send`` (airflow/sdk/execution_time/supervisor.py)
    logs every message to the supervisor at DEBUG, ``MaskSecret(value=<the secret>)`` included,
    unmasked; the real supervisor logs that message "(body omitted)". It is Airflow's, for any
    secret registered with ``mask_secret``, and happens only in ``dag.test()`` at DEBUG.
    """
    return (
        event_dict.get("event") == "Sending request" and type(event_dict.get("msg")).__name__ == "MaskSecret"
    )


#: The same echo as rendered on stdout: one line each.
_MASK_SECRET_ECHO = re.compile(r"^.*\bSending request\b.*\bmsg=MaskSecret\(value=.*$\n?", re.MULTILINE)


def _loggers() -> list[logging.Logger]:
    return [logging.getLogger()] + [
        logger
        for logger in list(logging.root.manager.loggerDict.values())
        if isinstance(logger, logging.Logger)
    ]


@pytest.fixture
def debug_logs(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> Iterator[LogCapture]:
    """
    DEBUG on every logger, handler and structlog filter, with a capture of everything logged.

    Everything is put back afterwards: levels, ``disabled`` flags, handlers' levels, Airflow's
    per-logger structlog levels, structlog's processors and ``logging.disable``.
    """
    import structlog

    capture = LogCapture()
    monkeypatch.setenv("AIRFLOW__LOGGING__LOGGING_LEVEL", "DEBUG")
    loggers = _loggers()
    levels = [(logger, logger.level, logger.disabled) for logger in loggers]
    handlers = {handler for logger in loggers for handler in logger.handlers}
    handler_levels = [(handler, handler.level) for handler in handlers]
    disabled = logging.root.manager.disable
    tries = []
    for name in ("airflow._shared.logging.structlog", "airflow.sdk._shared.logging.structlog"):
        try:
            trie = importlib.import_module(name).PER_LOGGER_LEVELS
        except (ImportError, AttributeError):
            continue
        tries.append((trie, dict(trie.items())))
    processors = list(structlog.get_config()["processors"])
    attached = [logger for logger in loggers if logger is logging.root or not logger.propagate]
    try:
        logging.disable(logging.NOTSET)
        for logger in loggers:
            logger.setLevel(logging.DEBUG)
            logger.disabled = False
        for handler in handlers:
            handler.setLevel(logging.DEBUG)
        for trie, _ in tries:
            trie.clear()
            trie[""] = logging.DEBUG
        structlog.configure(processors=[capture.structlog_processor, *processors])
        for logger in attached:
            logger.addHandler(capture)
        caplog.set_level(logging.DEBUG)
        yield capture
    finally:
        for logger in attached:
            logger.removeHandler(capture)
        structlog.configure(processors=processors)
        for trie, saved in tries:
            trie.clear()
            trie.update(saved)
        for handler, level in handler_levels:
            handler.setLevel(level)
        for logger, level, was_disabled in levels:
            logger.setLevel(level)
            logger.disabled = was_disabled
        logging.disable(disabled)


# ------------------------------------------------------------------------------------ the DAG runs


def connection(emulator: SalebotEmulator, key: str, **extra: Any) -> str:
    return json.dumps(
        {
            "conn_type": "salebot",
            "host": emulator.base_url,
            "password": key,
            "extra": {"backoff_factor": 0, **extra},
        }
    )


def load_dag() -> DAG:
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=DAG_FILE)
    if bag.import_errors or DAG_ID not in bag.dags:
        pytest.fail(f"{DAG_FILE.name} did not load: {bag.import_errors}")
    return bag.dags[DAG_ID]


def last_trigger_id() -> int:
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session
    from sqlalchemy import func, select

    with create_session() as session:
        return session.scalar(select(func.max(Trigger.id))) or 0


def _value_text(value: Any) -> str:
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).decode("utf-8", "replace")
    return value if isinstance(value, str) else repr(value)


def run_rows(dag_run: DagRun, after_trigger: int) -> dict[str, str]:
    """
    Every database row of the run, as text, by table; plus the trigger rows' decrypted kwargs.

    Rows of the run (``dag_id`` and ``run_id``), of its task instances (``ti_id``), of the DAG
    (``dag_id``: its serialized form and code), and the triggers made since ``after_trigger``.
    """
    import sqlalchemy as sa
    from airflow.models.trigger import Trigger
    from airflow.utils.session import create_session

    texts: dict[str, str] = {}
    with create_session() as session:
        metadata = sa.MetaData()
        metadata.reflect(bind=session.get_bind())
        ti = metadata.tables["task_instance"]
        ti_ids = session.scalars(
            sa.select(ti.c.id).where(ti.c.dag_id == dag_run.dag_id, ti.c.run_id == dag_run.run_id)
        ).all()
        for table in metadata.sorted_tables:
            columns = table.c
            if "dag_id" in columns and "run_id" in columns:
                where = sa.and_(columns.dag_id == dag_run.dag_id, columns.run_id == dag_run.run_id)
            elif "ti_id" in columns:
                where = columns.ti_id.in_(ti_ids)
            elif table.name == "trigger":
                where = columns.id > after_trigger
            elif "dag_id" in columns:
                where = columns.dag_id == dag_run.dag_id
            else:
                continue
            rows = session.execute(sa.select(table).where(where)).mappings().all()
            texts[f"table {table.name}"] = "\n".join(
                "; ".join(f"{name}={_value_text(value)}" for name, value in row.items()) for row in rows
            )
        triggers = session.scalars(sa.select(Trigger).where(Trigger.id > after_trigger)).all()
        texts["trigger kwargs, decrypted"] = "\n".join(f"{t.classpath} {t.kwargs!r}" for t in triggers)
    return texts


def files_text(folder: Path) -> dict[str, str]:
    return {f"file {p}": p.read_text(errors="replace") for p in sorted(folder.rglob("*")) if p.is_file()}


def home_files() -> set[Path]:
    """
    Files under $AIRFLOW_HOME and the task log folder, but the metadata database (read row by row).

    A run that adds one (a task log file) fails the test, so that no output goes unsearched.
    """
    from airflow.configuration import conf

    folders = {Path(os.environ["AIRFLOW_HOME"]), Path(conf.get("logging", "base_log_folder"))}
    return {
        p
        for folder in folders
        for p in folder.rglob("*")
        if p.is_file() and not p.name.startswith("airflow.db")
    }


class DealMover:
    """Run ``on_first_poll(order_id)`` in a thread once the emulator first sees that deal polled."""

    def __init__(self, emulator: SalebotEmulator, on_first_poll: Mapping[int, Callable[[int], None]]) -> None:
        self.emulator, self.on_first_poll = emulator, dict(on_first_poll)
        self.done = threading.Event()
        self.errors: list[BaseException] = []
        self.thread = threading.Thread(target=self._run, daemon=True)

    def polls(self, order_id: int) -> list[Any]:
        return [
            r
            for r in self.emulator.requests
            if r.action == "get_order_state" and r.params.get("order_id") == str(order_id)
        ]

    def _run(self) -> None:
        waiting = dict(self.on_first_poll)
        try:
            while waiting and not self.done.is_set():
                for order_id in [o for o in waiting if self.polls(o)]:
                    waiting.pop(order_id)(order_id)
                time.sleep(0.02)
        except BaseException as exc:  # reported by __exit__
            self.errors.append(exc)

    def __enter__(self) -> DealMover:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(10)
        assert not self.errors, self.errors
        assert not self.thread.is_alive()


class Stage:
    """The emulator's project for one run of the DAG, and that run's parameters."""

    def __init__(self, emulator: SalebotEmulator, out_dir: Path) -> None:
        self.emulator = emulator
        self.out_dir = out_dir
        self.ids = emulator.seed_clients(5, seed=7)
        self.list_id = emulator.add_list()
        self.client = emulator.add_client("777001", name="Secret Keeper")
        with emulator.state.lock:
            self.order = emulator.state.add_deal(self.client, 101).id
        self.deals: dict[str, list[int]] = {}
        for mode in ("poke", "reschedule", "deferred"):
            client = emulator.add_client(f"wait-{mode}")
            with emulator.state.lock:
                self.deals[mode] = [client, emulator.state.add_deal(client, 101).id]

    def params(self, **changes: Any) -> dict[str, Any]:
        return {
            "ids": self.ids,
            "leads": [
                {"platform_id": f"7900{i}", "group_id": "shop_bot", "client_type": 1} for i in range(3)
            ],
            "scores": {str(i): {"client.score": n, "tier": "gold"} for n, i in enumerate(self.ids[:3])},
            "list_id": self.list_id,
            "q": {"segment": {"_in": ["vip", "regular", "new", "lapsed"]}},
            "out_dir": str(self.out_dir),
            "client": self.client,
            "order": self.order,
            "missing": 0,
            "deals": self.deals,
            **changes,
        }

    def move_to(self, order_id: int, state_id: int) -> None:
        with self.emulator.state.lock:
            self.emulator.state.move_deal(self.emulator.state.deals[order_id], state_id)


def outputs_of_run(
    dag_run: DagRun,
    after_trigger: int,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    logs: LogCapture,
    out_dir: Path,
) -> dict[str, str]:
    out, err = capfd.readouterr()
    return {
        "stdout": _MASK_SECRET_ECHO.sub("", out),
        "stderr": err,
        "caplog": caplog.text,
        **logs.texts(),
        **files_text(out_dir),
        **run_rows(dag_run, after_trigger),
    }


def assert_evidence(texts: Mapping[str, str], expected: Mapping[str, Iterable[str]]) -> None:
    """Each collection holds what the run did: the search covered real output."""
    for name, needles in expected.items():
        for needle in needles:
            assert needle in texts[name], f"{needle!r} is not in {name}"


def test_no_key_in_any_output_of_a_dag_run_where_every_task_succeeds(
    salebot_emulator: SalebotEmulator,
    run_dag: RunDag,
    debug_logs: LogCapture,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    emulator = salebot_emulator
    second_key = emulator.add_key(["clients_read", "clients_write", "crm_read", "crm_write"])
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_ALT", connection(emulator, second_key))
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_FAST", connection(emulator, emulator.api_key, timeout=5, max_retries=0)
    )
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_SENSOR", connection(emulator, emulator.api_key))
    stage = Stage(emulator, tmp_path / "out")
    stage.out_dir.mkdir()
    dag = load_dag()
    before_files, before_trigger = home_files(), last_trigger_id()

    moves = {order: (lambda o: emulator.auto_advance(o, every=0.3)) for _, order in stage.deals.values()}
    with DealMover(emulator, moves):
        dag_run = run_dag(dag, **stage.params())

    tis = task_instances(dag_run)
    assert {k: ti.state for k, ti in tis.items()} == dict.fromkeys(
        (*OPERATOR_TASKS, *SENSOR_TASKS), "success"
    )
    texts = outputs_of_run(dag_run, before_trigger, capfd, caplog, debug_logs, stage.out_dir)
    # dag.test() writes no task log file: the logs are the stdout and the records searched here.
    assert home_files() - before_files == set()
    assert_no_key([emulator.api_key, second_key], texts)
    host = emulator.base_url.removeprefix("http://")
    assert_evidence(
        texts,
        {
            "stdout": ["Salebot broadcast: 5 of 5 recipients sent", "Salebot add_to_list", "reached 104"],
            # DEBUG reached the libraries' loggers and the hook's own; their URLs were redacted.
            "log records": [
                f"Starting new HTTP connection (1): {host}",
                '"POST /api/***/broadcast HTTP/1.1" 200',
                f"HTTP Request: GET http://{host}/api/***/get_order_state",
            ],
            "structlog events": ["/api/***/create_order", "-> HTTP"],
            "caplog": ["/api/***/get_order_state"],
            "table xcom": ["recipients", "loaded", "paid_at"],
            "table rendered_task_instance_fields": [
                f"Sale {dag_run.logical_date:%Y-%m-%d} from {emulator.base_url}"
            ],
            "table task_instance": ["wait_deferred"],
            "table task_state_store": ["broadcast"],
            "table task_reschedule": ["reschedule_date"],
            "table dag_run": ["out_dir", str(stage.list_id)],
            "trigger kwargs, decrypted": [TRIGGER, "salebot_default"],
            f"file {stage.out_dir / 'clients.jsonl'}": ["Secret Keeper"],
        },
    )


def test_no_key_in_any_output_of_a_dag_run_where_every_task_fails(
    salebot_emulator: SalebotEmulator,
    run_dag: RunDag,
    debug_logs: LogCapture,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    emulator = salebot_emulator
    # A key without clients_write and crm_write: add_to_list and create_order get 403 WRONG_ACTION.
    reader_key = emulator.add_key(["clients_read", "crm_read"])
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_ALT", connection(emulator, reader_key))
    monkeypatch.setenv(
        "AIRFLOW_CONN_SALEBOT_FAST", connection(emulator, emulator.api_key, timeout=0.5, max_retries=0)
    )
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_SENSOR", connection(emulator, WRONG_KEY))  # 401
    stage = Stage(emulator, tmp_path / "out")
    stage.out_dir.mkdir()
    emulator.inject("broadcast", status=502, processed=True, after=1, times=1)
    emulator.inject("load_clients", reset=True, processed=True, times=1)
    emulator.inject("save_variables", status=503)
    emulator.inject("remove_from_list", latency=1.5, times=1)
    emulator.inject("find_clients", html=True)
    emulator.inject("get_clients", invalid_json=True)
    emulator.inject("message", status=502, processed=True, times=1)
    emulator.inject("callback", latency=1.5, times=1)
    emulator.inject("set_order_state", reset=True, times=1)
    emulator.inject("set_order_vars", status=500)
    stage.move_to(stage.deals["reschedule"][1], 105)
    deferred = stage.deals["deferred"][1]

    def fail_the_trigger(order_id: int) -> None:
        # The sensor's own first look saw 101 and deferred; its trigger then meets two 502s, then 105.
        emulator.inject("get_order_state", status=502, times=2)
        while sum(r.status == 502 for r in mover.polls(order_id)) < 2 and not mover.done.is_set():
            time.sleep(0.02)
        stage.move_to(order_id, 105)

    dag = load_dag()
    before_files, before_trigger = home_files(), last_trigger_id()
    with DealMover(emulator, {deferred: fail_the_trigger}) as mover:
        dag_run = run_dag(dag, **stage.params(missing=9_999_999))

    tis = task_instances(dag_run)
    assert {k: ti.state for k, ti in tis.items()} == dict.fromkeys((*OPERATOR_TASKS, *SENSOR_TASKS), "failed")
    statuses = {(r.action, r.status) for r in emulator.requests}
    assert {("add_to_list", 403), ("create_order", 403), ("get_order_state", 401)} <= statuses
    assert [r.status for r in mover.polls(deferred)][:3] == [200, 502, 502]
    texts = outputs_of_run(dag_run, before_trigger, capfd, caplog, debug_logs, stage.out_dir)
    assert home_files() - before_files == set()
    assert_no_key([emulator.api_key, reader_key, WRONG_KEY], texts)
    everything = "\n".join(texts.values())
    for cause in (
        "stopped part-way",  # broadcast: processed, then 502
        "in doubt",
        "HTTP 403",
        "HTTP 401",
        "HTTP 502",
        "HTTP 503",
        "HTTP 500",
        "no whole reply within 0.5s",
        "reached the failure state 105",
        "Polling",  # the trigger's warning about its 502s
    ):
        assert cause in everything, cause
    assert_evidence(
        texts,
        {
            "log records": ['"POST /api/***/broadcast HTTP/1.1" 502', "/api/***/get_order_state"],
            "structlog events": ["Traceback (most recent call last)", "SalebotAPIError", "/api/***/"],
            "table rendered_task_instance_fields": [emulator.base_url],
            "table task_instance": ["failed"],
            "table task_state_store": ["broadcast"],
            "trigger kwargs, decrypted": [TRIGGER],
        },
    )


# ------------------------------------------------------------------------------------ plain Python


def exception_texts(error: BaseException) -> str:
    """An exception as a user may see it: str, repr, args, attributes, the formatted chain."""
    parts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    todo: list[BaseException] = [error]
    while todo:
        link = todo.pop()
        if id(link) in seen:
            continue
        seen.add(id(link))
        parts += [str(link), repr(link), repr(link.args), repr(getattr(link, "__dict__", {}))]
        parts += [
            "".join(traceback.format_exception_only(link)),
            repr(link.__notes__ if hasattr(link, "__notes__") else None),
        ]
        todo += [e for e in (link.__cause__, link.__context__) if e is not None]
    return "\n".join(parts)


def closed_port() -> int:
    """A port on 127.0.0.1 where nothing listens (it was free a moment ago)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _ok(emulator: SalebotEmulator, hook: Any) -> Any:
    client = emulator.add_client("5001")
    return [
        hook.connected_channels(),
        hook.get_variables(client),
        hook.message(client, message="hello"),
        list(hook.iter_clients(page_size=1)),
        hook.test_connection(),
    ]


#: name -> (connection: "default" / "reader" / "wrong" / "refused", extras, set-up, call, error, evidence).
HOOK_CASES: dict[str, tuple[str, dict[str, Any], Callable[..., Any], Callable[..., Any], str, str]] = {
    "success": ("default", {}, lambda em: None, _ok, "", "Connected to Salebot project"),
    "http_502_on_a_read": (
        "default",
        {"max_retries": 1},
        lambda em: em.inject("get_variables", status=502),
        lambda em, hook: hook.get_variables(em.add_client("5002")),
        "SalebotAPIError",
        "HTTP 502",
    ),
    "processed_then_502_on_a_send": (
        "default",
        {},
        lambda em: em.inject("message", status=502, processed=True, times=1),
        lambda em, hook: hook.message(em.add_client("5003"), message="hello"),
        "SalebotAPIError",
        "HTTP 502",
    ),
    "html_error_page": (
        "default",
        {"max_retries": 0},
        lambda em: em.inject("get_clients", html=True),
        lambda em, hook: list(hook.iter_clients()),
        "SalebotAPIError",
        "HTTP 502",
    ),
    "invalid_json": (
        "default",
        {"max_retries": 0},
        lambda em: em.inject("get_variables", invalid_json=True),
        lambda em, hook: hook.get_variables(em.add_client("5004")),
        "SalebotAPIError",
        "get_variables",
    ),
    "403_key_without_the_permission": (
        "reader",
        {},
        lambda em: None,
        lambda em, hook: hook.add_to_list(em.add_list(), [em.add_client("5005")]),
        "SalebotPermissionError",
        "HTTP 403",
    ),
    "401_wrong_key": (
        "wrong",
        {},
        lambda em: None,
        lambda em, hook: (hook.test_connection(), hook.get_variables(em.add_client("5006"))),
        "SalebotPermissionError",
        "HTTP 401",
    ),
    "404_unknown_client": (
        "default",
        {},
        lambda em: None,
        lambda em, hook: hook.message(9_999_999, message="hello"),
        "SalebotNotFoundError",
        "HTTP 404",
    ),
    "read_timeout": (
        "default",
        {"timeout": 0.5, "max_retries": 0},
        lambda em: em.inject("get_variables", latency=1.5, times=1),
        lambda em, hook: hook.get_variables(em.add_client("5007")),
        "SalebotConnectionError",
        "no whole reply within 0.5s",
    ),
    "connection_reset": (
        "default",
        {"max_retries": 1},
        lambda em: em.inject("get_clients", reset=True),
        lambda em, hook: hook.get_clients(),
        "SalebotConnectionError",
        "no reply",
    ),
    "connection_refused": (
        "refused",
        {"max_retries": 1},
        lambda em: None,
        lambda em, hook: (hook.test_connection(), hook.get_variables(1)),
        "SalebotConnectionError",
        "nothing was sent",
    ),
    "chunk_in_doubt_part_way": (
        "default",
        {},
        lambda em: em.inject("add_to_list", status=502, processed=True, after=1, times=1),
        lambda em, hook: list(
            hook.iter_chunked("add_to_list", em.seed_clients(5), chunk_size=2, list_id=em.add_list())
        ),
        "SalebotAPIError",
        "HTTP 502",
    ),
    "unknown_action": (
        "default",
        {"max_retries": 0},
        lambda em: None,
        lambda em, hook: hook.call("no_such_action", {"client_id": 1}),
        "SalebotAPIError",
        "no_such_action",
    ),
}


@pytest.mark.parametrize("case", list(HOOK_CASES))
def test_no_key_in_any_output_of_plain_python_hook_use(
    case: str,
    salebot_emulator: SalebotEmulator,
    debug_logs: LogCapture,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from salebot_provider.hooks import SalebotHook

    emulator = salebot_emulator
    which, extras, set_up, call, error_class, evidence = HOOK_CASES[case]
    reader_key = emulator.add_key(["clients_read", "crm_read"])
    key = {"reader": reader_key, "wrong": WRONG_KEY}.get(which, emulator.api_key)
    conn = json.loads(connection(emulator, key, **extras))
    if which == "refused":
        conn["host"] = f"http://127.0.0.1:{closed_port()}"
    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", json.dumps(conn))
    set_up(emulator)

    texts: dict[str, str] = {}
    with SalebotHook() as hook:
        failure: Exception | None = None
        try:
            texts["result"] = repr(call(emulator, hook))
        except Exception as error:
            failure = error
        if failure is None:
            assert not error_class, f"{case} raised nothing"
        else:
            texts["exception"] = exception_texts(failure)
            assert error_class in [c.__name__ for c in type(failure).__mro__], texts["exception"]
        texts["hook"] = "\n".join([repr(hook), str(hook), repr(vars(hook)), repr(hook.settings)])
    out, err = capfd.readouterr()
    texts |= {"stdout": out, "stderr": err, "caplog": caplog.text, **debug_logs.texts()}

    assert_no_key([emulator.api_key, reader_key, WRONG_KEY], texts)
    assert evidence in "\n".join(texts.values())
    if case not in ("read_timeout", "connection_reset", "connection_refused"):
        # A reply came: urllib3 logged the request line at DEBUG, with the key's place redacted.
        assert '"GET /api/***/' in texts["log records"] or '"POST /api/***/' in texts["log records"]
    assert "Starting new HTTP connection" in texts["log records"]


async def _first_event(trigger: Any) -> Any:
    async for event in trigger.run():
        return event.payload
    raise AssertionError("the trigger ended without an event")


def test_no_key_in_any_output_of_the_trigger_run_in_plain_python(
    salebot_emulator: SalebotEmulator,
    debug_logs: LogCapture,
    capfd: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from salebot_provider.triggers import OrderStateTrigger

    emulator = salebot_emulator
    client = emulator.add_client("6001")
    with emulator.state.lock:
        paid = emulator.state.add_deal(client, 104).id
    fast = {"timeout": 0.5, "rate_limit": 50}
    texts: dict[str, str] = {}

    # Through a 502, a reset and a read timeout to the target state; then a wrong key; then no deal.
    emulator.inject("get_order_state", status=502, times=1)
    emulator.inject("get_order_state", reset=True, after=1, times=1)
    emulator.inject("get_order_state", latency=1.5, after=2, times=1)
    runs = [
        (emulator.api_key, paid, "success"),
        (WRONG_KEY, paid, "error"),
        (emulator.api_key, 99_999, "error"),
    ]
    for number, (key, order_id, status) in enumerate(runs):
        monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", connection(emulator, key, **fast))
        trigger = OrderStateTrigger(
            client, [104], order_id=order_id, failure_states=[105], poll_interval=0.05
        )
        texts[f"serialized trigger {number}"] = repr(trigger.serialize())
        event = asyncio.run(_first_event(trigger))
        assert event["status"] == status, event
        texts[f"event {number}"] = repr(event)
    out, err = capfd.readouterr()
    texts |= {"stdout": out, "stderr": err, "caplog": caplog.text, **debug_logs.texts()}

    assert_no_key([emulator.api_key, WRONG_KEY], texts)
    assert [r.status for r in emulator.requests if r.action == "get_order_state"][-2:] == [401, 200]
    host = emulator.base_url.removeprefix("http://")
    assert f"HTTP Request: GET http://{host}/api/***/get_order_state" in texts["log records"]
    assert "HTTP 401" in texts["event 1"]
    assert "not found" in texts["event 2"]
    for trouble in ("HTTP 502", "no reply", "no whole reply within 0.5s"):
        assert trouble in "\n".join(texts.values()), trouble
    assert "salebot_default" in texts["serialized trigger 0"]
