"""The console script and the pytest plugin, as a user meets them after ``pip install``."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import requests

if TYPE_CHECKING:
    import pytest

pytest_plugins = ["pytester"]


def test_console_script_serves_and_prints_the_connection() -> None:
    script = Path(sys.executable).with_name("salebot-emulator")
    proc = subprocess.Popen(
        [str(script), "--port", "0", "--clients", "25", "--seed", "1"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        printed: dict[str, str] = {}
        while "Admin API" not in printed:  # Airflow may log a line of its own first
            line = proc.stdout.readline()
            assert line, "the script ended early"
            label, _, value = line.strip().partition(": ")
            printed[label] = value
        base_url = printed["Serving the Salebot emulator"]
        key = printed["API key"]
        conn = json.loads(printed["Connection JSON"])
        assert conn == {"conn_type": "salebot", "host": base_url, "password": key}
        summary = requests.get(f"{base_url}/_emulator/state", timeout=5).json()
        assert summary["clients"] == 25
        reply = requests.get(f"{base_url}/api/{key}/get_clients", params={"limit": 3}, timeout=5).json()
        assert len(reply["clients"]) == 3
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0


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


def test_the_tour_runs(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    from salebot_provider.testing import tour

    monkeypatch.setenv("AIRFLOW_CONN_SALEBOT_DEFAULT", "restored after the test")
    tour.main()
    printed = capsys.readouterr().out
    assert "in_doubt=True, sent 1 time(s)" in printed
    assert "load_clients: 1200 rows in chunks of 500, 1200 ok" in printed
    assert "bad input is refused before sending" in printed
