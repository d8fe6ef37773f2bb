"""Running whole DAGs in tests: a migrated metadata DB, and ``run_dag`` to run one with ``dag.test()``.

``dag.test()`` runs one DAG run in this process with the real task runner: templates are rendered,
XComs pushed, retries made, ``reschedule`` sensors rescheduled and deferred tasks' triggers run
inline. It needs the metadata DB, which ``airflow_db`` migrates once per session (in the private
AIRFLOW_HOME that ``tests/conftest.py`` sets before Airflow is imported).

.. code-block:: python

    def test_my_dag(run_dag: RunDag, salebot_emulator: SalebotEmulator) -> None:
        dag_run = run_dag("salebot_test_my_dag", ids=[1, 2])  # tests/dags/files/salebot_test_my_dag.py
        # or: run_dag(dag) for a DAG built in the test
        tis = task_instances(dag_run)
        assert tis["my_task"].state == "success"
        assert tis["my_task"].xcom_pull(task_ids="my_task") == 42
"""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import pytest

if TYPE_CHECKING:
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.sdk import DAG

#: DAG files that tests run by their dag_id: ``files/<dag_id>.py``.
FILES = Path(__file__).with_name("files")
#: The example DAGs users copy.
EXAMPLES = Path(__file__).parents[2] / "example_dags"


#: ``run_dag``'s default: a logical date of now, as dag.test() gives when none is named.
NOW: Any = object()


class RunDag(Protocol):
    def __call__(self, dag: DAG | str, /, logical_date: Any = NOW, **params: Any) -> DagRun: ...


@pytest.fixture(scope="session")
def airflow_db() -> None:
    """Migrate the metadata DB once per test session (``airflow db migrate`` in a subprocess)."""
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run([str(airflow), "db", "migrate"], capture_output=True, text=True, check=False)
    if done.returncode:
        pytest.fail(
            f"airflow db migrate failed ({done.returncode}):\n{done.stdout[-2000:]}{done.stderr[-2000:]}"
        )


def _load(dag: DAG | str) -> DAG:
    """Put the DAG in the metadata DB, as the DAG processor would: dag.test() runs only known DAGs."""
    from airflow.dag_processing.bundles.manager import DagBundlesManager
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db

    DagBundlesManager().sync_bundles_to_db()
    if isinstance(dag, str):
        bag = DagBag(dag_folder=FILES / f"{dag}.py")
        if bag.import_errors or dag not in bag.dags:
            pytest.fail(f"DAG {dag!r} did not load from {FILES}: {bag.import_errors}")
        dag = bag.dags[dag]
    else:
        bag = DagBag(collect_dags=False)
        bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    return dag


@pytest.fixture
def run_dag(airflow_db: None) -> RunDag:
    """
    Run a DAG once with ``dag.test()`` and return its DagRun.

    Give a DAG object, or the dag_id of a file in ``tests/dags/files/``; keyword arguments are the
    run's params (``run_conf``). ``logical_date=None`` runs it as a run triggered through the REST API
    or the UI without one (no ``ds``/``ts`` in its context). Each test DAG needs its own dag_id: the DB
    lives for the session.
    """

    def run(dag: DAG | str, /, logical_date: Any = NOW, **params: Any) -> DagRun:
        if logical_date is NOW:
            return _load(dag).test(run_conf=params or None)
        return _load(dag).test(run_conf=params or None, logical_date=logical_date)

    return run


@pytest.fixture
def example(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """Import an example DAG with its data folder in ``tmp_path``; returns a loader by dag_id."""
    monkeypatch.setenv("SALEBOT_EXAMPLE_DATA", str(tmp_path))
    monkeypatch.setenv("SALEBOT_EXAMPLE_POKE_INTERVAL", "0.2")
    monkeypatch.setenv("SALEBOT_EXAMPLE_RETRY_DELAY", "0.1")

    def load(dag_id: str) -> Any:
        spec = importlib.util.spec_from_file_location(f"example_{dag_id}", EXAMPLES / f"{dag_id}.py")
        assert spec is not None
        assert spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module.dag

    return load


def task_instances(dag_run: DagRun) -> dict[str, TaskInstance]:
    """
    The run's task instances by task id; a mapped task's as ``"task_id[i]"``.

    They stay usable after the session (``ti.state``, ``ti.try_number``, ``ti.xcom_pull(...)``).
    """
    from airflow.utils.session import create_session

    with create_session() as session:
        tis = dag_run.get_task_instances(session=session)
        session.expunge_all()
    return {ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]": ti for ti in tis}


def no_key(emulator: Any, *texts: str) -> None:
    """Assert that the emulator's API key is in none of these texts (output, logs, XComs ...)."""
    for text in texts:
        assert emulator.api_key not in text
