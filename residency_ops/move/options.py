"""How a move paces itself: page sizes, parallelism, when catch-up stops, the waits around
the freeze. Defaults suit the stores' bounds (``docs/move_contract.md``); tests shrink them."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class MoveOptions:
    export_limit: int = 200  # items per export page
    import_max_bytes: int = 4 * 1024 * 1024  # one import request's items, serialised, at most
    import_max_items: int = 1000  # the stores' bound per import
    keys_per_export: int = 100  # keys per export-keys call (replay; the stores take 1000)
    parallel_replays: int = 6  # export-keys + import pairs in flight in a replay round
    small_backlog: int = 50  # catch-up stops once a round replays at most this many keys
    max_catch_up_rounds: int = 20
    shrink_ratio: float = 0.8  # catch-up goes on while a round replays < 80 % of the last
    settle_s: float = 0.5  # the final catch-up: an empty round this long after the fence
    save_every_s: float = 1.0  # bulk copy: cursors persisted at most this often
    digest_limit: int = 1000
    purge_limit: int = 1000  # items a purge step scans per segment (a step is one request)
    # Verify's full digest scan before the freeze; inside it, only changed keys (verify.py).
    scan_before_freeze: bool = True
    # After the flip the source stays "frozen" this long before "moved_out": an edge that has
    # not seen the flip yet (the registry change log's bound) gets a retryable 503
    # account_moving from the source rather than a 421. Safety does not depend on it.
    propagation_s: float = 1.5
