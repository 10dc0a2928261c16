"""Prometheus metrics of one store instance, in a per-app registry served on ``/metrics``.

Three families, all with bounded labels:

- ``profile_store_requests_total{region,instance,operation,status_class}``: operation is the
  spec operationId of the matched route (``unmatched`` otherwise), status_class ``2xx``...
- ``profile_store_dynamodb_calls_total{operation,call}``: every DynamoDB API call, labelled with
  the HTTP operation that caused it (``startup``/``readyz`` outside requests) and the API name.
- ``profile_store_dynamodb_capacity_units_total{operation,call}``: the ConsumedCapacity DynamoDB
  reported for those calls (every data call asks for ``ReturnConsumedCapacity=TOTAL``).

Together they prove that a region's traffic stays in its region and what each operation costs.
The HTTP operation travels to the repository through a context variable, so the repository does
not need an extra parameter on every method.
"""

from __future__ import annotations

import contextvars
from typing import Any

from prometheus_client import CollectorRegistry, Counter, generate_latest

CURRENT_OPERATION: contextvars.ContextVar[str] = contextvars.ContextVar(
    "profile_store_operation", default="internal"
)


class StoreMetrics:
    def __init__(self, *, region: str, instance: str) -> None:
        self.region = region
        self.instance = instance
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "profile_store_requests_total",
            "HTTP requests served by this store instance",
            ["region", "instance", "operation", "status_class"],
            registry=self.registry,
        )
        self.ddb_calls = Counter(
            "profile_store_dynamodb_calls_total",
            "DynamoDB API calls made by this store instance",
            ["operation", "call"],
            registry=self.registry,
        )
        self.ddb_capacity = Counter(
            "profile_store_dynamodb_capacity_units_total",
            "DynamoDB capacity units consumed (as reported by ReturnConsumedCapacity)",
            ["operation", "call"],
            registry=self.registry,
        )

        self.fence_refusals = Counter(
            "profile_store_fence_refusals_total",
            "Requests refused by an account's move fence (fence.py), by answer and method kind",
            ["region", "instance", "error", "kind"],
            registry=self.registry,
        )

    def fence_refusal(self, error: str, *, write: bool) -> None:
        kind = "write" if write else "read"
        self.fence_refusals.labels(self.region, self.instance, error, kind).inc()

    def request(self, operation: str, status: int) -> None:
        self.requests.labels(self.region, self.instance, operation, f"{status // 100}xx").inc()

    def dynamodb_call(self, call: str, response: dict[str, Any] | None) -> None:
        operation = CURRENT_OPERATION.get()
        self.ddb_calls.labels(operation, call).inc()
        units = consumed_units(response) if response else 0.0
        if units:
            self.ddb_capacity.labels(operation, call).inc(units)

    def render(self) -> bytes:
        return generate_latest(self.registry)


def consumed_units(response: dict[str, Any]) -> float:
    """Sum ConsumedCapacity, which is a dict for single-item calls and a list for batches."""
    consumed = response.get("ConsumedCapacity")
    if not consumed:
        return 0.0
    if isinstance(consumed, dict):
        consumed = [consumed]
    return float(sum(float(c.get("CapacityUnits") or 0.0) for c in consumed))
