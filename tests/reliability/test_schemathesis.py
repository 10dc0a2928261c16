"""Schemathesis runs the public Profile System spec against the edge, with demo credentials.

Checks, chosen deliberately:

* ``not_a_server_error``          -- no 5xx, whatever the input;
* ``response_schema_conformance`` -- every documented (2xx) answer matches the spec's schema;
* ``content_type_conformance``    -- documented answers carry the documented media type;
* ``ignored_auth``                -- the spec declares two credentials (app key + token, or a
                                     ``VtexIdclientAutCookie`` user token): the same request
                                     without valid credentials must be refused.

The run is made once per credential: the demo account's app key, and a user token from the
local stack's demo issuer for a user granted every role on that account.

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
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from residency_contract.assertion import GRANTABLE_ROLES

from .conftest import STATS, Load
from .stack import DEMO_KEYS, ReliabilityStack, wait_for

pytestmark = pytest.mark.slow

SPEC = Path(__file__).resolve().parents[3] / "shared" / "spec" / "vtex-profile-system.openapi.json"
CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "content_type_conformance",
    "ignored_auth",
)


FUZZ_USER = ("9e8d7c6b-5a49-4f3e-8d2c-00000000f022", "fuzz.user@example.com")  # demo issuer


def _status(url: str, headers: dict[str, str]) -> int:
    req = urllib.request.Request(url, headers=headers)  # noqa: S310 (loopback)
    try:
        with urllib.request.urlopen(req, timeout=2) as resp:  # noqa: S310
            return int(resp.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return 0


def _user_token_headers(stack: ReliabilityStack) -> list[str]:
    """A user granted every role on demo-eu, and a token for them from the demo issuer."""
    user_id, email = FUZZ_USER
    roles = ",".join(sorted(GRANTABLE_ROLES))
    grant = stack.ops("registry", "grant-user", "demo-eu", email, "--roles", roles)
    stack.run("grant-user", grant, stack.base_env())
    issue = [stack.python, "-m", "residency_dev", "token", "issue"]
    issue += ["--key", stack.demo_issuer["key_file"], "--account"]
    issue += ["demo-eu", "--user", user_id, "--email", email]
    token = stack.run("token issue", issue, stack.edge_env()).strip()
    STATS.pii_values.update({token, email})  # the end-of-session log scan looks for both
    headers = {"VtexIdclientAutCookie": token}
    probe = f"{stack.edge_url}/api/storage/profile-system/profiles/x?an=demo-eu"
    # the edge's registry cache (1 s TTL here) has seen the new grant: no more 403
    wait_for(
        "the grant reaches the edge",
        lambda: _status(probe, headers) not in {0, 401, 403},
        timeout=15,
    )
    return ["-H", f"VtexIdclientAutCookie: {token}"]


@pytest.mark.parametrize("credential", ["app_key", "user_token"])
def test_spec_fuzzing_through_the_edge(
    stack: ReliabilityStack, load: Load, tmp_path: Path, credential: str
) -> None:
    if not SPEC.is_file():
        pytest.skip(f"{SPEC} is not present")
    if credential == "app_key":
        key, token = DEMO_KEYS["demo-eu"]
        auth = ["-H", f"X-VTEX-API-AppKey: {key}", "-H", f"X-VTEX-API-AppToken: {token}"]
    else:
        auth = _user_token_headers(stack)
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
        *auth,
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
    STATS.fault(f"schemathesis, {credential} ({load.max_examples} examples/operation)")
    m = re.search(r"(\d+) generated", out)
    sent = int(m.group(1)) if m else 0
    STATS.requests += sent
    assert sent > 50, out[-3000:]  # it really exercised the API
    assert "Test cases:" in out, out[-3000:]  # the run finished (no crash, no timeout)
    # Any failure fails the test: a 5xx, a wrong content type, ignored auth, or an answer that
    # violates the spec's response schema.
    assert done.returncode == 0, out[-6000:]
