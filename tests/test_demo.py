"""`make demo`'s entry point: the example DAGs on the emulator, a report, exit 0; and again."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_make_demo_runs_the_example_dags_twice_and_reports(tmp_path: Path) -> None:
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(tmp_path / "home"),
        "SALEBOT_EXAMPLE_DATA": str(tmp_path / "data"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
    }
    env.pop("AIRFLOW_CONN_SALEBOT_DEFAULT", None)
    command = [sys.executable, "-m", "salebot_provider.testing.demo", "--dags", str(ROOT / "example_dags")]
    for _ in range(2):  # a second run works without cleaning
        done = subprocess.run(command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=600)
        report = done.stdout
        assert done.returncode == 0, report + done.stderr[-3000:]
        assert "All three DAGs succeeded" in report
        for dag_id in ("salebot_crm_sync", "salebot_campaign_broadcast", "salebot_order_pipeline"):
            assert f"{dag_id}: success" in report
        assert "leads loaded: 40, failed: 1" in report
        assert "101 -> 102 -> 103 -> 104" in report
        assert "Thank you! Your order" in report
        assert (tmp_path / "data/export/clients.jsonl").stat().st_size > 0
        log = (tmp_path / "home/demo.log").read_text()
        # The key is a path segment: anything but *** there would be the key.
        for text in (report, done.stderr, log):
            assert not re.search(r"/api/(?!\*\*\*/)[^/\s]+/", text)
        assert "/api/***/" in log
