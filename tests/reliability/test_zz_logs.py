"""Runs last (file order): the edge's and the stores' logs hold none of the test PII.

Every e-mail and document the reliability tests sent (``conftest.Pii``) is searched for, as
sent and percent-encoded, in every log file of the stack; hostile tests deliberately put some
of them into malformed requests that the edge refuses.
"""

from __future__ import annotations

import pytest

from .conftest import STATS, scan_logs
from .stack import ReliabilityStack

pytestmark = pytest.mark.slow


def test_no_pii_in_any_log(_session_stack: ReliabilityStack) -> None:
    logs = _session_stack.log_files()
    assert {p.name for p in logs} >= {"edge.log"}
    assert sum(p.stat().st_size for p in logs) > 0  # the scan looks at real output
    found = scan_logs(_session_stack)
    STATS.pii_found = found
    assert found == [], found
