"""``residency-ops``: the operators' tool, apart from the edge it manages.

::

    residency-ops [--config FILE] registry ...                 accounts, keys, user grants
    residency-ops [--config FILE] account move|status|resume|abort ...
    residency-ops [--config FILE] residency report ...

It runs with the edge's settings (``--config``, else ``EDGE_CONFIG`` / ``EDGE_*``): the
registry table, and each region's store instances, assertion secret and table. The command's
module is imported only once its name is parsed (``commands``).
"""

from __future__ import annotations

import argparse
import sys

from edge_router.config import ConfigError

from .commands import COMMANDS, load
from .settings import load_settings


def main(argv: list[str] | None = None) -> int:
    listing = "\n".join(f"  {name:<10} {info.summary}" for name, info in COMMANDS.items())
    parser = argparse.ArgumentParser(
        prog="residency-ops",
        description="Operator commands of the PII residency edge.",
        epilog=f"commands:\n{listing}",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--config", default=None, help="the edge's settings file (default: $EDGE_CONFIG)"
    )
    parser.add_argument("command", choices=list(COMMANDS), metavar="COMMAND")
    parser.add_argument("args", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    top = parser.parse_args(argv)
    command = load(top.command)
    sub = argparse.ArgumentParser(
        prog=f"residency-ops {top.command}", description=COMMANDS[top.command].summary
    )
    command.add_arguments(sub)
    args = sub.parse_args(top.args)
    try:
        settings = load_settings(top.config)
    except ConfigError as exc:
        print(f"residency-ops: configuration error: {exc}", file=sys.stderr)
        return 2
    return command.run(settings, args)


if __name__ == "__main__":
    sys.exit(main())
