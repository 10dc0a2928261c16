"""The command table of ``residency-ops``: one module per command group, imported only when
its command runs, so a command's imports (aiohttp for a move, tqdm for a report) cost only
when it is the one asked for (the shape of pip's ``_internal/commands/__init__.py``).

::

    registry.py    registry ...: accounts, API keys, user grants, status, home region
    account.py     account move|status|resume|abort: an account's move (``move/``)
    residency.py   residency report: where each account's data is (``report.py``)

Each module has ``add_arguments(parser)`` and ``run(settings, args)`` returning the exit code.
"""

from __future__ import annotations

import argparse
import importlib
from dataclasses import dataclass
from typing import Protocol

from edge_router.config import EdgeSettings


@dataclass(frozen=True, slots=True)
class CommandInfo:
    module_path: str
    summary: str


COMMANDS = {
    "registry": CommandInfo(
        "residency_ops.commands.registry", "manage accounts, API keys and user grants"
    ),
    "account": CommandInfo(
        "residency_ops.commands.account", "move an account to another region (resumable job)"
    ),
    "residency": CommandInfo(
        "residency_ops.commands.residency", "prove where each account's data is"
    ),
}


class Command(Protocol):
    def add_arguments(self, parser: argparse.ArgumentParser) -> None: ...

    def run(self, settings: EdgeSettings, args: argparse.Namespace) -> int: ...


def load(name: str) -> Command:
    """The module of command ``name``, imported now."""
    module: Command = importlib.import_module(COMMANDS[name].module_path)  # type: ignore[assignment]
    return module
