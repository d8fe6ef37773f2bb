"""The package as Airflow sees it: provider discovery, the connection type, cheap imports."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import certifi

import salebot_provider


def test_provider_info_names_the_distribution_and_the_connection_type() -> None:
    info = salebot_provider.get_provider_info()
    assert info["package-name"] == "airflow-provider-salebot"
    assert info["versions"] == [salebot_provider.__version__]
    (conn,) = info["connection-types"]
    assert conn["connection-type"] == "salebot"
    assert conn["hook-class-name"] == "salebot_provider.hooks.salebot.SalebotHook"
    assert conn["hook-name"] == "Salebot"
    assert conn["ui-field-behaviour"]["relabeling"]["password"] == "API key"
    assert set(conn["conn-fields"]) == {
        "timeout",
        "max_retries",
        "backoff_factor",
        "rate_limit",
        "rate_limit_redis",
        "verify",
        "timezone",
    }


def test_entry_point_is_registered() -> None:
    (ep,) = [
        e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("salebot_provider")
    ]
    assert ep.load() is salebot_provider.get_provider_info


def test_providers_manager_knows_the_hook() -> None:
    from airflow.providers_manager import ProvidersManager

    try:  # Airflow 3.2+ keeps the hooks in the task SDK's manager
        from airflow.sdk.providers_manager_runtime import ProvidersManagerTaskRuntime as HooksManager
    except ImportError:
        HooksManager = ProvidersManager

    manager = ProvidersManager()
    assert "airflow-provider-salebot" in manager.providers
    hook = HooksManager().hooks["salebot"]
    assert hook is not None
    assert hook.hook_class_name == "salebot_provider.hooks.salebot.SalebotHook"
    assert hook.connection_id_attribute_name == "salebot_conn_id"
    assert "extra__salebot__timeout" in manager.connection_form_widgets
    assert manager.field_behaviours["salebot"]["relabeling"]["password"] == "API key"


def _airflow(*args: str) -> str:
    env = {**os.environ, "AIRFLOW__CORE__LOAD_EXAMPLES": "False"}
    airflow = Path(sys.executable).with_name("airflow")
    done = subprocess.run(
        [str(airflow), *args], capture_output=True, text=True, env=env, timeout=120, check=True
    )
    # Airflow may log a line before the JSON document.
    return next(line for line in reversed(done.stdout.splitlines()) if line.startswith("[{"))


def test_airflow_cli_lists_the_provider_and_its_hook() -> None:
    providers = json.loads(_airflow("providers", "list", "-o", "json"))
    assert any(p["package_name"] == "airflow-provider-salebot" for p in providers)
    hooks = json.loads(_airflow("providers", "hooks", "-o", "json"))
    assert any(h.get("connection_type") == "salebot" for h in hooks)


def test_importing_the_package_is_cheap() -> None:
    heavy = "('airflow', 'requests', 'tenacity')"
    code = f"import sys, salebot_provider; print(sorted(m for m in {heavy} if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_every_module_the_provider_lists_imports() -> None:
    import importlib

    info = salebot_provider.get_provider_info()
    modules = [
        m
        for kind in ("operators", "sensors", "triggers", "hooks")
        for e in info[kind]
        for m in e["python-modules"]
    ]
    assert len(modules) == 14
    for module in modules:
        importlib.import_module(module)


def test_a_dag_file_with_a_webhook_watcher_stays_cheap() -> None:
    # The trigger and the batch operator are built in DAG files: no server, no Redis client, no Parquet.
    code = (
        "import sys\n"
        "from salebot_provider.webhook import SalebotMessageTrigger, LoadWebhookMessagesOperator\n"
        "heavy = ('starlette', 'uvicorn', 'redis', 'pyarrow', 'requests')\n"
        "print(sorted(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_a_dag_file_importing_the_operators_and_the_sensor_stays_cheap() -> None:
    # A DAG file is parsed often: no HTTP library of ours, no hook, until a task runs.
    code = (
        "import sys; import salebot_provider.operators; from salebot_provider.sensors import "
        "OrderStateSensor; "
        "print(sorted(m for m in ('requests', 'salebot_provider.hooks.salebot') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip().splitlines()[-1] == "[]"


def test_the_providers_api_shows_a_documentation_url() -> None:
    # Airflow takes it from the distribution's Project-URL "Documentation" (pyproject's [project.urls]).
    from airflow.api_fastapi.core_api.services.public.providers import _provider_mapper
    from airflow.providers_manager import ProvidersManager

    provider = ProvidersManager().providers["airflow-provider-salebot"]
    assert (
        _provider_mapper(provider).documentation_url == "https://pypi.org/project/airflow-provider-salebot/"
    )


def test_the_connection_form_takes_a_ca_bundle_path_for_verify(tmp_path: Path) -> None:
    from wtforms import Form, StringField

    from salebot_provider.api import settings_from_connection
    from salebot_provider.hooks import SalebotHook

    field = SalebotHook.get_connection_form_widgets()["verify"]
    assert field.field_class is StringField
    schema = salebot_provider.get_provider_info()["connection-types"][0]["conn-fields"]["verify"]["schema"]
    assert "string" in schema["type"]
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(certifi.where()).read_bytes())  # a real bundle: it is loaded to check it
    form = type("F", (Form,), {"verify": field})(data={"verify": str(bundle)})
    extra = {"verify": form.verify.data}
    assert settings_from_connection(host=None, password="k" * 40, extra=extra).verify == str(bundle)
    for text, expected in (("true", True), ("false", False)):
        assert (
            settings_from_connection(host=None, password="k" * 40, extra={"verify": text}).verify is expected
        )


def test_license_is_the_apache_2_text() -> None:
    text = (Path(__file__).parent.parent / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License")
    assert "Version 2.0, January 2004" in text
    assert "END OF TERMS AND CONDITIONS" in text
