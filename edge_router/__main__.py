"""``edge-router``: ``serve [--workers N]`` runs the edge; ``registry ...`` manages accounts;
``account move ...`` moves an account to another region (``move/cli.py``); ``token ...`` is the
local demo issuer of user tokens; ``residency report`` proves where each account's data is."""

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
    p_reg = sub.add_parser("registry", help="manage the account registry")
    from . import token_cli
    from .registry_cli import add_arguments, run

    add_arguments(p_reg)
    p_acc = sub.add_parser("account", help="move an account to another region (resumable job)")
    from .move import cli as move_cli

    move_cli.add_arguments(p_acc)
    token_cli.add_arguments(sub.add_parser("token", help="LOCAL DEMO user-token issuer"))
    p_res = sub.add_parser("residency", help="prove where each account's data is")
    from . import residency_cli

    residency_cli.add_arguments(p_res)
    args = parser.parse_args(argv)
    if args.command == "token":  # needs no edge settings
        return token_cli.run(args)
    try:
        settings = EdgeSettings.from_env()
    except ConfigError as exc:
        print(f"edge-router: configuration error: {exc}", file=sys.stderr)
        return 2
    if args.command == "serve":
        if args.workers is not None and args.workers < 1:
            print("edge-router: --workers must be >= 1", file=sys.stderr)
            return 2
        from .server import serve

        try:
            return serve(settings, args.workers, args.worker_index)
        except ConfigError as exc:  # found at start, e.g. a token issuer's unusable JWK set
            print(f"edge-router: configuration error: {exc}", file=sys.stderr)
            return 2
    if args.command == "account":
        return move_cli.run(settings, args)
    if args.command == "residency":
        return residency_cli.run(settings, args)
    return run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
