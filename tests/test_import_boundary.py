"""The two deployables meet only in ``residency_contract``: neither imports the other.

The edge image is built without the store's code (``deploy/Dockerfile``), so an import of
``profile_store`` from ``edge_router`` would be a crash in production, not a style slip. The
static check reads every module's imports with ``ast`` (a lazy import inside a function counts
too); the dynamic check imports the edge's entry points in a fresh interpreter and looks at
what was loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge_router", "profile_store", "residency_contract")
# package -> top-level packages of this repo it must never import
FORBIDDEN = {
    "edge_router": {"profile_store"},
    "profile_store": {"edge_router"},
    "residency_contract": {"edge_router", "profile_store"},
}


def imported_tops(path: Path, package: str) -> set[str]:
    """Top-level package names a module imports (relative imports resolve to ``package``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    tops: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            tops.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                tops.add(package)
            elif node.module:
                tops.add(node.module.split(".")[0])
        elif (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute | ast.Name)
            and getattr(node.func, "attr", getattr(node.func, "id", "")) == "import_module"
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            tops.add(node.args[0].value.split(".")[0])
    return tops


def modules(package: str) -> list[Path]:
    found = sorted((ROOT / package).rglob("*.py"))
    assert found, f"no modules found for {package}"
    return found


@pytest.mark.parametrize("package", PACKAGES)
def test_package_never_imports_the_other_deployable(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_tops(path, package) & FORBIDDEN[package])
        for path in modules(package)
    }
    assert {p: names for p, names in offenders.items() if names} == {}


def test_the_checker_sees_every_import_form(tmp_path: Path) -> None:
    # The static check is only as good as its parser: each form below must be caught.
    sample = tmp_path / "sample.py"
    sample.write_text(
        "import profile_store.keys\n"
        "from profile_store import crypto\n"
        "from . import sibling\n"
        "def lazy():\n"
        "    from edge_router.config import EdgeSettings\n"
        "    importlib.import_module('profile_store.app')\n"
    )
    assert imported_tops(sample, "residency_contract") == {
        "profile_store",
        "residency_contract",
        "edge_router",
    }


def test_both_deployables_use_the_contract() -> None:
    # The contract is not an unused third copy: each side imports it.
    for package in ("edge_router", "profile_store"):
        users = [p for p in modules(package) if "residency_contract" in imported_tops(p, package)]
        assert users, f"{package} does not import residency_contract"


EDGE_ENTRY_POINTS = (
    "edge_router.app",
    "edge_router.server",
    "edge_router.registry_cli",
    "edge_router.__main__",
)


def test_the_edge_process_loads_no_store_code() -> None:
    probe = (
        "import importlib, json, sys\n"
        f"for name in {list(EDGE_ENTRY_POINTS)!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    loaded = set(json.loads(done.stdout))
    assert set(EDGE_ENTRY_POINTS) <= loaded
    assert "residency_contract.signer" in loaded
    store = sorted(m for m in loaded if m == "profile_store" or m.startswith("profile_store."))
    assert store == []
    # profile_store.keys is what used to drag AES-GCM in: the edge has no use for it.
    assert "cryptography.hazmat.primitives.ciphers.aead" not in loaded
