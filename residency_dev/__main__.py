"""``python -m residency_dev token demo-keys --dir D | issue --account A --user U ...``: the
LOCAL DEMO user-token issuer (``token_issuer``), for the local stack and tests."""

from __future__ import annotations

import argparse
import sys

from . import token_issuer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m residency_dev", description="Developer tools")
    sub = parser.add_subparsers(dest="command", required=True)
    token_issuer.add_arguments(sub.add_parser("token", help="LOCAL DEMO user-token issuer"))
    return token_issuer.run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
