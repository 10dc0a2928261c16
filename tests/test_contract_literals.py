"""A string two deployables must agree on is spelled once, in ``residency_contract``.

The import-boundary test cannot see a literal copied to each side: a renamed dependency error
and the edge ejects healthy stores, a drifted salt key and ``registry set-region`` re-homes an
account that has data. This test reads every module outside the contract with ``ast`` and fails
on a string constant (f-string parts included, docstrings excluded) that spells one of the
contract's key prefixes, header names, error codes or paths (prose, a string with white
space, may name them).
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from residency_contract import protocol, tables

ROOT = Path(__file__).resolve().parent.parent
# Every package of the repo that talks to another deployable or reads another's tables.
PACKAGES = tuple(
    name
    for name in ("edge_router", "profile_store", "residency_ops", "residency_dev")
    if (ROOT / name).is_dir()
)

# Spelled anywhere inside a string: a prefix, a header name, an error code, a path.
SUBSTRINGS = (
    tables.ACCOUNT_PREFIX,
    tables.APPKEY_PREFIX,
    tables.MOVE_PREFIX,
    tables.USER_SK_PREFIX,
    tables.FENCE_PREFIX,
    tables.MOVED_PREFIX,
    protocol.ASSERTION_HEADER.lower(),
    protocol.INTERNAL_HEADER_PREFIX,
    protocol.REQUEST_ID_HEADER.lower(),
    protocol.TRANSFER_PREFIX,
    protocol.DYNAMODB_UNAVAILABLE,
    protocol.KEY_SERVICE_UNAVAILABLE,
    protocol.ACCOUNT_MOVING,
    protocol.CHECKPOINT_TRIMMED,
    protocol.REGION_PATTERN.pattern.strip("^$"),
)
# A whole string that is one of these (too short to look for inside prose).
WHOLE = frozenset({tables.CHANGES_PK, tables.SALT_SK, tables.MOVE_SK, tables.META_SK})
# The start of a string (a key being built): ``A#...``.
STARTS = (tables.DATA_PREFIX,)


def docstrings(tree: ast.AST) -> set[int]:
    """ids of the constant nodes that are docstrings (prose may name these strings)."""
    found: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if (
                body
                and isinstance(body[0], ast.Expr)
                and isinstance(body[0].value, ast.Constant)
                and isinstance(body[0].value.value, str)
            ):
                found.add(id(body[0].value))
    return found


def offending(source: str) -> list[tuple[int, str]]:
    """(line, literal) of every string constant that spells a contract string."""
    tree = ast.parse(source)
    skip = docstrings(tree)
    hits: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
            continue
        if id(node) in skip or any(ch.isspace() for ch in node.value):
            continue  # prose (a docstring, a message) may name them; keys and codes have no spaces
        value: str = node.value
        lowered = value.lower()
        if (
            any(needle.lower() in lowered for needle in SUBSTRINGS)
            or value in WHOLE
            or value.startswith(STARTS)
        ):
            hits.append((node.lineno, value))
    return hits


def test_the_scan_sees_what_it_is_meant_to_see() -> None:
    source = '''
"""Docstrings may say ACCOUNT# and X-Request-Id."""
a = f"ACCOUNT#{name}"
b = "x-request-id"
c = {"error": "dynamodb_unavailable"}
d = f"A#{account}#P#{pid}"
e = "META"
f = "a META item"
g = "send X-Request-Id again"
'''
    lines = sorted(line for line, _ in offending(source))
    assert lines == [3, 4, 5, 6, 7]


@pytest.mark.parametrize("package", PACKAGES)
def test_no_contract_string_is_spelled_outside_the_contract(package: str) -> None:
    found = []
    for path in sorted((ROOT / package).rglob("*.py")):
        for line, value in offending(path.read_text()):
            found.append(f"{path.relative_to(ROOT)}:{line}: {value!r}")
    assert not found, "import these from residency_contract instead:\n" + "\n".join(found)


def test_the_region_pattern_is_the_contracts() -> None:
    assert protocol.REGION_PATTERN.match("eu-west-1")
    assert protocol.REGION_PATTERN.match("ap-southeast-2")
    assert not re.match(protocol.REGION_PATTERN, "eu_west_1")
