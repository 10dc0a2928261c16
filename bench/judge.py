"""Goals judge the collected rows as met / not met / n/a.

``Goal(name, description, check)`` whose ``check(rows)`` returns ``(True | False | None,
detail)``, ``None`` reporting "n/a"; ``select`` picks rows; ``metric_at_most`` and
``difference_at_most`` build the common kinds. The bench's own goals are in ``bench.goals``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from bench.cases import CaseResult

Selector = dict[str, Any]


def select(rows: Iterable[CaseResult], where: Selector) -> list[CaseResult]:
    """Rows with status ok whose fields equal every item of ``where``."""
    return [
        r for r in rows if r.status == "ok" and all(getattr(r, k) == v for k, v in where.items())
    ]


@dataclass
class GoalOutcome:
    name: str
    description: str
    status: str  # met | not met | n/a
    detail: str


@dataclass
class Goal:
    name: str
    description: str
    check: Callable[[list[CaseResult]], tuple[bool | None, str]]

    def evaluate(self, rows: list[CaseResult]) -> GoalOutcome:
        try:
            verdict, detail = self.check(rows)
        except Exception as exc:
            verdict, detail = None, f"could not evaluate: {type(exc).__name__}: {exc}"
        status = "n/a" if verdict is None else ("met" if verdict else "not met")
        return GoalOutcome(self.name, self.description, status, detail)


def _fmt(v: float | None) -> str:
    return "-" if v is None else f"{v:.3g}"


def metric_at_most(
    name: str, description: str, where: Selector, metric: str, limit: float, unit: str = ""
) -> Goal:
    """Every selected row has ``metric`` <= ``limit``."""

    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        sel = [r for r in select(rows, where) if getattr(r, metric) is not None]
        if not sel:
            return None, f"no successful case matches {where}"
        worst = max(sel, key=lambda r: getattr(r, metric))
        v = getattr(worst, metric)
        return v <= limit, f"worst {worst.case}: {_fmt(v)}{unit} (limit {_fmt(limit)}{unit})"

    return Goal(name, description, check)


def _one(rows: list[CaseResult], where: Selector) -> CaseResult | None:
    sel = select(rows, where)
    return sel[0] if sel else None


def difference_at_most(
    name: str,
    description: str,
    case: Selector,
    baseline: Selector,
    metric: str,
    limit: float,
    unit: str = "",
) -> Goal:
    """metric(case row) - metric(baseline row) <= limit (e.g. p50 overhead over direct)."""

    def check(rows: list[CaseResult]) -> tuple[bool | None, str]:
        a, b = _one(rows, case), _one(rows, baseline)
        if a is None or b is None or getattr(a, metric) is None or getattr(b, metric) is None:
            return None, f"needs successful cases {case} and {baseline}"
        d = getattr(a, metric) - getattr(b, metric)
        return d <= limit, (f"{a.case} - {b.case} = {d:.3f}{unit} (limit {limit}{unit})")

    return Goal(name, description, check)


def evaluate(goals: Iterable[Goal], rows: list[CaseResult]) -> list[GoalOutcome]:
    return [g.evaluate(rows) for g in goals]
