"""The two deployables meet only in ``residency_contract``: neither imports the other. The
operator tools (``residency_ops``) sit above the edge and import it, never the store; the dev
tools (``residency_dev``) are imported by nothing that ships.

Each image is built with its own packages only (``deploy/Dockerfile``): the edge image has no
store, operator or dev code, so an import of ``profile_store``, ``residency_ops`` or
``residency_dev`` from ``edge_router`` would be a crash in production, not a style slip. The
static check reads every module's imports with ``ast`` (a lazy import inside a function counts
too); the dynamic checks import the entry points in a fresh interpreter and look at what was
loaded.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("edge_router", "profile_store", "residency_contract", "residency_ops")
OPS, DEV = "residency_ops", "residency_dev"
# package -> top-level packages of this repo it must never import
FORBIDDEN = {
    "edge_router": {"profile_store", OPS, DEV},
    "profile_store": {"edge_router", OPS, DEV},
    "residency_contract": {"edge_router", "profile_store", OPS, DEV},
    # the ops image holds the edge's code and its own, nothing else
    OPS: {"profile_store", DEV},
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
    for package in ("edge_router", "profile_store", OPS):
        users = [p for p in modules(package) if "residency_contract" in imported_tops(p, package)]
        assert users, f"{package} does not import residency_contract"


EDGE_ENTRY_POINTS = (
    "edge_router.app",
    "edge_router.server",
    "edge_router.__main__",
)


def loaded_by(*names: str) -> set[str]:
    """Every module a fresh interpreter holds after importing ``names``."""
    probe = (
        "import importlib, json, sys\n"
        f"for name in {list(names)!r}:\n"
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
    return set(json.loads(done.stdout))


def of(loaded: set[str], *tops: str) -> list[str]:
    return sorted(m for m in loaded if m.split(".")[0] in tops)


def test_the_edge_process_loads_no_store_ops_or_dev_code() -> None:
    loaded = loaded_by(*EDGE_ENTRY_POINTS)
    assert set(EDGE_ENTRY_POINTS) <= loaded
    assert "residency_contract.signer" in loaded
    assert of(loaded, "profile_store", OPS, DEV) == []
    # tqdm is the operator tools' (the ``ops`` extra): the edge image does not install it.
    assert of(loaded, "tqdm") == []
    # profile_store.key_providers is what used to drag AES-GCM in: the edge has no use for it.
    assert "cryptography.hazmat.primitives.ciphers.aead" not in loaded


def test_the_ops_tool_imports_a_command_only_when_it_runs() -> None:
    loaded = loaded_by(f"{OPS}.__main__")
    assert of(loaded, "profile_store", DEV, "tqdm") == []
    # the command table names modules; none of them (nor the mover) is loaded to parse argv
    later = [m for m in of(loaded, OPS) if m.startswith((f"{OPS}.commands.", f"{OPS}.move"))]
    assert later == []
