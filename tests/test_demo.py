"""`make demo`'s entry point: the example DAGs on the emulator, a report, exit 0; and again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
DAGS = ("salebot_crm_sync", "salebot_campaign_broadcast", "salebot_order_pipeline", "salebot_reply_followup")


def test_make_demo_runs_the_example_dags_twice_and_reports(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "SALEBOT_EXAMPLE_DATA": str(tmp_path / "data"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    env.pop("AIRFLOW_CONN_SALEBOT_DEFAULT", None)
    # As `make demo` runs: not Airflow's unit-test mode, whose Fernet key changes with each process (the
    # reply DAG's watcher keeps an encrypted trigger row between the two runs).
    env.pop("AIRFLOW__CORE__UNIT_TEST_MODE", None)
    command = [sys.executable, "-m", "salebot_provider.testing.demo", "--dags", str(ROOT / "example_dags")]
    for _ in range(2):  # a second run works without cleaning
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        report = done.stdout
        assert done.returncode == 0, report + done.stderr[-3000:]
        assert "All four DAGs succeeded" in report
        for dag_id in DAGS:
            assert f"{dag_id}: success" in report
        assert "leads loaded: 40, failed: 1" in report
        assert "101 -> 102 -> 103 -> 104" in report
        assert "Thank you! Your order" in report
        # The reply loop: three replies spooled, three events without the text, each handled.
        assert "3 clients replied; the receiver answered 200 to each and spooled 3 messages" in report
        assert len(re.findall(r"event \d+: client \d+, labels \['stop'\]", report)) == 1
        assert "wrote 'Стоп': unsubscribed, told 'Вы отписались" in report
        assert len(re.findall(r"wrote '[^']+': deal \d+: (\d+) -> (?!\1)\d+", report)) == 2
        assert (tmp_path / "data/export/clients.jsonl").stat().st_size > 0
        log = (tmp_path / "home/demo.log").read_text()
        # The key is a path segment: anything but *** there would be the key.
        for text in (report, done.stderr, log):
            assert not re.search(r"/api/(?!\*\*\*/)[^/\s]+/", text)
        assert "/api/***/" in log
