"""``edge-router serve [--workers N]``: runs the edge (settings from ``EDGE_*`` / ``EDGE_CONFIG``).

The edge's only command. The operators' commands (``registry``, ``account``, ``residency``)
are ``residency-ops`` (``residency_ops``), which the edge image does not ship; the demo
token issuer is ``python -m residency_dev token`` (no image ships it)."""

from __future__ import annotations

import argparse
import sys

from .config import ConfigError, EdgeSettings


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="edge-router", description="PII residency edge")
    sub = parser.add_subparsers(dest="command", required=True)
    p_serve = sub.add_parser("serve", help="run the edge (settings from EDGE_* / EDGE_CONFIG)")
    p_serve.add_argument("--workers", type=int, default=None, help="processes sharing the port")
    p_serve.add_argument("--worker-index", type=int, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    try:
        settings = EdgeSettings.from_env()
    except ConfigError as exc:
        print(f"edge-router: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.workers is not None and args.workers < 1:
        print("edge-router: --workers must be >= 1", file=sys.stderr)
        return 2
    from .server import serve

    try:
        return serve(settings, args.workers, args.worker_index)
    except ConfigError as exc:  # found at start, e.g. a token issuer's unusable JWK set
        print(f"edge-router: configuration error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
