"""Schemathesis runs the public Profile System spec against the edge, with demo credentials.

Checks, chosen deliberately:

* ``not_a_server_error``          -- no 5xx, whatever the input;
* ``response_schema_conformance`` -- every documented (2xx) answer matches the spec's schema;
* ``content_type_conformance``    -- documented answers carry the documented media type;
* ``ignored_auth``                -- the spec declares app key/token auth: the same request
                                     without valid credentials must be refused.

Excluded, and why:

* ``status_code_conformance`` -- the spec documents only the success code of each operation,
  no 4xx at all, so every correct refusal (400 bad id, 404 unknown profile, 409 duplicate)
  would count as a failure;
* ``negative_data_rejection`` -- the spec's schemas allow additional properties and we accept
  custom profile fields (the custom schema), so "invalid" bodies it invents are often valid;
* ``positive_data_acceptance`` -- generated ids name no stored profile, so a valid request is
  rightly a 404;
* ``missing_required_header`` -- the spec marks ``Content-Type``/``Accept`` as required
  headers, but a missing Accept is not an error for us (we always answer JSON);
* ``use_after_free``, ``ensure_resource_availability``, ``object_level_authorization`` -- need
  the spec's links (it has none) and a second identity per resource;
* ``unsupported_method``, ``allow_header_conformance`` -- the edge routes by path and leaves the
  method to the store; a 404/405 without ``Allow`` on an unrouted method is acceptable here;
* ``response_headers_conformance`` -- the spec documents no response headers.

Bounded: ``--max-examples`` per operation and ``--max-time`` for the run (``--long`` raises
both); requests go to 127.0.0.1 only, with the account in the Host header.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import STATS, Load
from .stack import DEMO_KEYS, ReliabilityStack

pytestmark = pytest.mark.slow

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "vtex-profile-system.openapi.json"
CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "content_type_conformance",
    "ignored_auth",
)


def test_spec_fuzzing_through_the_edge(stack: ReliabilityStack, load: Load, tmp_path: Path) -> None:
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} is not present")
    key, token = DEMO_KEYS["demo-eu"]
    cmd = [
        sys.executable,
        "-m",
        "schemathesis.cli",
        "run",
        str(SPEC),
        "--url",
        stack.edge_url,
        "-H",
        "Host: demo-eu.localhost",
        "-H",
        f"X-VTEX-API-AppKey: {key}",
        "-H",
        f"X-VTEX-API-AppToken: {token}",
        "--checks",
        ",".join(CHECKS),
        "--phases",
        "examples,coverage,fuzzing",
        "--max-examples",
        str(load.max_examples),
        "--max-time",
        str(load.max_time),
        "--workers",
        "2",
        "--seed",
        "20240601",
        "--request-timeout",
        "15",
        "--generation-database",
        "none",
    ]
    env = {**os.environ, "NO_COLOR": "1", "SCHEMATHESIS_HOOKS": ""}
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=load.max_time + 120, env=env, cwd=tmp_path
    )
    out = done.stdout + done.stderr
    (tmp_path / "schemathesis.out").write_text(out)
    STATS.fault(f"schemathesis ({load.max_examples} examples/operation)")
    m = re.search(r"(\d+) generated", out)
    sent = int(m.group(1)) if m else 0
    STATS.requests += sent
    assert sent > 50, out[-3000:]  # it really exercised the API
    assert "Test cases:" in out, out[-3000:]  # the run finished (no crash, no timeout)
    # Any failure fails the test: a 5xx, a wrong content type, ignored auth, or an answer that
    # violates the spec's response schema.
    assert done.returncode == 0, out[-6000:]
