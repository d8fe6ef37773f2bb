"""Running DAGs for real: a migrated metadata DB, the DAG files of ``files/`` in its dags folder."""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

#: The DAG files the tests run, one DAG each, named after its dag_id.
DAG_FILES = Path(__file__).parent / "files"


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """
    Migrate the private metadata DB (tests/conftest.py set ``AIRFLOW_HOME``) once per session.

    ``dag.test()`` runs a DAG as the scheduler sees it, so the DAG must be found in the dags folder:
    the files of ``files/`` are copied there. Returns the dags folder.
    """
    home = Path(os.environ["AIRFLOW_HOME"])
    airflow = Path(sys.executable).parent / "airflow"
    done = subprocess.run(
        [str(airflow), "db", "migrate"], env=dict(os.environ), capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    dags = home / "dags"
    dags.mkdir(exist_ok=True)
    for path in DAG_FILES.glob("*.py"):
        shutil.copy(path, dags / path.name)
    return dags


def load_dag(dags: Path, dag_id: str) -> Any:
    """Import the DAG file named after ``dag_id`` from the dags folder and return its DAG."""
    from airflow.sdk import DAG

    spec = importlib.util.spec_from_file_location(f"salebot_test_dag_{dag_id}", dags / f"{dag_id}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (dag,) = (v for v in vars(module).values() if isinstance(v, DAG) and v.dag_id == dag_id)
    return dag


@pytest.fixture
def run_dag(airflow_db: Path) -> Callable[..., Any]:
    """
    Run a DAG of ``files/`` with ``dag.test()`` (the real task runner, in this process); return the DagRun.

    Call it as ``run_dag("dag_id", **run_conf)``; the DagRun's ``get_task_instances()`` give each
    task's state and try number, and ``ti.xcom_pull(task_ids=...)`` its XComs.
    """

    def run(dag_id: str, **run_conf: Any) -> Any:
        return load_dag(airflow_db, dag_id).test(run_conf=run_conf)

    return run


def task_instances(dag_run: Any) -> dict[str, Any]:
    """A DagRun's task instances by task id (``task_id[map_index]`` for mapped ones)."""
    return {
        ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti
        for ti in dag_run.get_task_instances()
    }
