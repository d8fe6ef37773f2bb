"""The console script and the pytest plugin, as a user meets them after ``pip install``."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import requests

from salebot_provider.testing import SalebotEmulator, cli

pytest_plugins = ["pytester"]


SCRIPT = Path(sys.executable).with_name("salebot-emulator")


def start_script(*args: str) -> tuple[subprocess.Popen[str], dict[str, str]]:
    """Start the console script and read what it prints up to the admin API line."""
    proc = subprocess.Popen([str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    printed: dict[str, str] = {}
    while "Admin API" not in printed:  # Airflow may log a line of its own first
        line = proc.stdout.readline()
        assert line, "the script ended early"
        label, _, value = line.strip().partition(": ")
        printed[label] = value
    return proc, printed


def stop_script(proc: subprocess.Popen[str]) -> str:
    """Stop the script as a user stops a background job (``kill $PID``); what it wrote to stderr."""
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    return err


def test_console_script_serves_and_prints_the_connection() -> None:
    proc, printed = start_script("--port", "0", "--clients", "25", "--seed", "1")
    try:
        base_url = printed["Serving the Salebot emulator"]
        key = printed["API key"]
        conn = json.loads(printed["Connection JSON"])
        assert conn == {"conn_type": "salebot", "host": base_url, "password": key}
        summary = requests.get(f"{base_url}/_emulator/state", timeout=5).json()
        assert summary["clients"] == 25
        reply = requests.get(f"{base_url}/api/{key}/get_clients", params={"limit": 3}, timeout=5).json()
        assert len(reply["clients"]) == 3
    finally:
        stop_script(proc)


def test_sigterm_stops_the_script_cleanly_and_frees_the_port() -> None:
    proc, printed = start_script("--port", "0")
    base_url = printed["Serving the Salebot emulator"]
    with requests.Session() as kept_alive:
        assert kept_alive.get(f"{base_url}/_emulator/state", timeout=5).ok
        err = stop_script(proc)
        with pytest.raises(requests.ConnectionError):
            kept_alive.get(f"{base_url}/_emulator/state", timeout=5)
    assert "Traceback" not in err
    port = int(base_url.rsplit(":", 1)[1])
    with SalebotEmulator(port) as again:
        assert again.port == port


def test_the_default_port_is_none_of_airflows() -> None:
    from airflow.configuration import conf

    airflow_ports = {
        int(conf.get_default_value(section, key))
        for section, key in [
            ("api", "port"),
            ("logging", "worker_log_server_port"),
            ("logging", "trigger_log_server_port"),
            ("scheduler", "scheduler_health_check_server_port"),
        ]
    }
    assert 8080 in airflow_ports
    assert cli.DEFAULT_PORT not in airflow_ports | {5555}  # 5555: Flower, of the Celery provider


def test_help_shows_the_default_port(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as ended:
        cli.main(["--help"])
    assert ended.value.code == 0
    shown = capsys.readouterr().out
    assert f"(default: {cli.DEFAULT_PORT};" in shown
    assert "SIGTERM" in shown


def hold_port(sock: socket.socket, port: int) -> int:
    """
    Make ``sock`` listen on ``port`` of 127.0.0.1 (0 for a free one), or make sure someone else does.

    SO_REUSEADDR, as the emulator sets it: without it a port that a stopped server left in
    TIME_WAIT cannot be bound, though nothing holds it, and the script would then serve there.
    """
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(("127.0.0.1", port))
        sock.listen()
    except OSError as exc:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
        except OSError:
            pytest.fail(f"the test can neither take port {port} nor find it in use: {exc}")
        return port  # another process listens there: the script meets the same
    return int(sock.getsockname()[1])


@pytest.mark.parametrize("explicit", [True, False])
def test_a_port_in_use_is_a_one_line_hint_and_exit_2(explicit: bool) -> None:
    with socket.socket() as taken:
        port = hold_port(taken, 0 if explicit else cli.DEFAULT_PORT)
        args = ["--port", str(port)] if explicit else []
        proc = subprocess.Popen(
            [str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        try:
            out, err = proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, err = proc.communicate()
            pytest.fail(f"the script served on port {port}, which the test holds:\n{out}{err}")
    assert proc.returncode == 2, err
    assert err.strip().splitlines()[-1] == (
        f"salebot-emulator: port {port} on 127.0.0.1 is in use: pass --port N, or --port 0 for a free one"
    )
    assert "Traceback" not in err


def test_a_port_a_stopped_emulator_left_in_time_wait_can_be_held_by_the_test() -> None:
    # The emulator stops before the session closes, so stop() closes the kept-alive connection
    # first and the emulator's side of it waits in TIME_WAIT, on the emulator's port.
    with requests.Session() as kept_alive, SalebotEmulator() as emulator:
        port = emulator.port
        assert kept_alive.get(f"{emulator.base_url}/_emulator/state", timeout=5).ok
    with socket.socket() as taken:
        assert hold_port(taken, port) == port
        assert taken.getsockname()[1] == port


def test_an_unknown_time_zone_is_a_one_line_error() -> None:
    ended = subprocess.run(
        [str(SCRIPT), "--port", "0", "--timezone", "Mars/Olympus"], capture_output=True, text=True, timeout=60
    )
    assert ended.returncode == 2
    assert ended.stderr.strip().splitlines()[-1] == (
        "salebot-emulator: unknown time zone 'Mars/Olympus' (an IANA name such as Europe/Moscow)"
    )
    assert "Serving" not in ended.stdout


def test_verbose_logs_each_request_without_the_key_and_timezone_reaches_the_connection() -> None:
    proc, printed = start_script("--port", "0", "--verbose", "--timezone", "Asia/Omsk")
    try:
        base_url, key = printed["Serving the Salebot emulator"], printed["API key"]
        assert json.loads(printed["Connection JSON"])["extra"] == {"timezone": "Asia/Omsk"}
        api = f"{base_url}/api/{key}"
        assert requests.get(f"{api}/get_messages", timeout=5).ok
        assert (
            requests.post(f"{api}/message", json={"client_id": 1, "message": "hi"}, timeout=5).status_code
            == 404
        )
        assert requests.get(f"{base_url}/api/get_messages/{key}", timeout=5).status_code == 401
        assert requests.get(f"{base_url}/_emulator/state", timeout=5).ok
        assert requests.get(f"{base_url}/{key}", timeout=5).status_code == 404
    finally:
        err = stop_script(proc)
    shown = [line.split(" ", 2)[2] for line in err.splitlines() if " ms" in line]  # after the date and time
    assert [re.sub(r"\d+\.\d ms$", "N ms", line) for line in shown] == [
        "GET /api/***/get_messages 200 N ms",
        "POST /api/***/message 404 N ms",
        "GET /api/***/(unknown action) 401 N ms",
        "GET /_emulator/state 200 N ms",
        "GET (unknown path) 404 N ms",
    ]
    assert key not in err


def test_fixture_gives_each_test_a_fresh_emulator_and_the_connection(pytester: pytest.Pytester) -> None:
    pytester.makepyfile(
        """
        import os

        import pytest

        from salebot_provider.hooks import SalebotHook


        def test_first(salebot_emulator):
            assert salebot_emulator.base_url in os.environ["AIRFLOW_CONN_SALEBOT_DEFAULT"]
            salebot_emulator.seed_clients(3)
            hook = SalebotHook()
            hook.message(min(salebot_emulator.state.clients), message="hi")
            assert len(salebot_emulator.outbox) == 1


        def test_second_starts_fresh(salebot_emulator):
            assert salebot_emulator.state.clients == {}
            assert salebot_emulator.outbox == []
            assert SalebotHook().connected_channels()["project_id"] == 1


        @pytest.mark.salebot_emulator(clients=7, seed=2, timezone="Asia/Omsk")
        def test_marker_seeds_the_project(salebot_emulator):
            assert len(salebot_emulator.state.clients) == 7
            assert SalebotHook().settings.timezone == "Asia/Omsk"
            assert len(list(SalebotHook().iter_clients())) == 7


        def test_marker_does_not_outlive_its_test(salebot_emulator):
            assert salebot_emulator.state.clients == {}
            assert salebot_emulator.timezone == "Europe/Moscow"
        """
    )
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", "--strict-markers")
    result.assert_outcomes(passed=4)
