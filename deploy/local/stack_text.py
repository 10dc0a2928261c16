"""What the local stack prints once it is ready (``stack.py``): where everything is, a
copy-paste curl session against the demo accounts, and the operator commands.

Every command printed runs as printed, from any shell, with nothing in the environment (the
operator commands read the stack's config, dummy credentials included):
``tests/deploy/test_local_stack.py`` runs both blocks so. The stack (``stack.Stack``) and the
demo values are passed in: this module does not import the script it serves.
"""

from __future__ import annotations

import json
import shlex
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

SESSION_BEGIN = "# ---- curl session (copy-paste) ----"
SESSION_END = "# ---- end of session ----"
OPERATOR_BEGIN = "# ---- operator commands (residency-ops, as they run against this stack) ----"
OPERATOR_END = "# ---- end of operator commands ----"


@dataclass(frozen=True, slots=True)
class Demo:
    """The LOCAL DEMO values the stack provisioned."""

    accounts: Mapping[str, str]  # account -> home region
    keys: Mapping[str, tuple[str, str]]  # account -> (app key, app token)
    user_id: str
    user_email: str
    user_roles: str


def token_command(stack: Any, demo: Demo) -> str:
    """The demo issuer's command printing a user token for the demo user on ``demo-eu``."""
    return (
        f"{stack.python} -m residency_dev token issue --key {stack.demo_issuer.get('key_file')} "
        f"--account demo-eu --user {demo.user_id} --email {demo.user_email}"
    )


def operator_commands(stack: Any) -> str:
    """``residency-ops`` against the stack: the registry, the proof of residency, a move."""
    commands = [
        ("# the registry: accounts, keys, grants", ["registry", "list"]),
        ("# where each account's data is (exit 0: all at home)", ["residency", "report"]),
        (
            "# move demo-eu's data to us-east-1 while it stays online",
            ["account", "move", "demo-eu", "--to", "us-east-1"],
        ),
        ("# the move's job", ["account", "status", "demo-eu"]),
    ]
    lines = [OPERATOR_BEGIN]
    for comment, args in commands:
        lines += [comment, shlex.join(stack.ops(*args))]
    return "\n".join([*lines, OPERATOR_END])


def session(stack: Any, demo: Demo) -> str:
    """The curl session: create, read, unmask, patch, a refused key, a user token."""
    base = f"http://127.0.0.1:{stack.edge_port}/api/storage/profile-system"
    json_h = "-H 'Content-Type: application/json' -H 'Accept: application/json'"
    auth = {
        account: f"-H 'X-VTEX-API-AppKey: {key}' -H 'X-VTEX-API-AppToken: {token}' {json_h}"
        for account, (key, token) in demo.keys.items()
    }
    pick = (
        "python3 -c 'import json,sys; d=json.load(sys.stdin); "
        'print(d["id"], d["meta"]["version"])\''
    )

    def create(var: str, account: str, profile: dict[str, str]) -> str:
        body = json.dumps(profile, separators=(",", ":"))
        post = f"curl -sf -X POST '{base}/profiles?an={account}' {auth[account]} -d '{body}'"
        return f'read -r {var}_ID {var}_V1 <<< "$({post} | {pick})"'

    def get(path: str, account: str) -> str:
        sep = "&" if "?" in path else "?"
        return f"curl -si '{base}/{path}{sep}an={account}' {auth[account]}"

    jane = {
        "firstName": "Jane",
        "lastName": "Roe",
        "email": "jane.roe@example.com",
        "document": "12345678900",
        "documentType": "CPF",
    }
    jean = {
        "firstName": "Jean",
        "lastName": "Dupont",
        "email": "jean.dupont@example.eu",
        "document": "98765432100",
        "documentType": "CPF",
    }
    return "\n".join(
        [
            SESSION_BEGIN,
            "# 1. create a profile for the us-east-1 account and one for the eu-west-1 account",
            create("US", "demo-us", jane),
            create("EU", "demo-eu", jean),
            "# 2. read them back masked; note the X-Data-Region header",
            get("profiles/'$US_ID'", "demo-us"),
            get("profiles/'$EU_ID'", "demo-eu"),
            "# 3. unmask with a reason (audited in the account's region)",
            get("profiles/'$EU_ID'/unmask?reason=support-ticket", "demo-eu"),
            "# 4. update a profile, then read its first version (unmasked, with a reason)",
            f"curl -si -X PATCH '{base}/profiles/'$US_ID'?an=demo-us' {auth['demo-us']} "
            '-d \'{"firstName":"Janet"}\'',
            get("profiles/'$US_ID'/versions/'$US_V1'/unmask?reason=audit-check", "demo-us"),
            "# 5. one account's key on the other account is refused (403)",
            get("profiles/'$EU_ID'", "demo-eu").replace(auth["demo-eu"], auth["demo-us"]),
            "# 6. the same unmask as a signed-in user: a VtexIdclientAutCookie user token from",
            "#    the LOCAL DEMO issuer (audited as user:<userId>)",
            f"curl -si '{base}/profiles/'$EU_ID'/unmask?reason=support-ticket&an=demo-eu' "
            f'{json_h} -H "VtexIdclientAutCookie: $({token_command(stack, demo)})"',
            SESSION_END,
        ]
    )


def banner(stack: Any, demo: Demo, hint: str) -> str:
    """Everything the stack prints once it is ready, ``READY.`` last."""
    accounts = ", ".join(f"{a} -> {r}" for a, r in demo.accounts.items())
    return (
        f"\nEdge:    http://127.0.0.1:{stack.edge_port}   (accounts resolve from Host "
        f"'<account>.localhost' or ?an=<account>)\n"
        f"Admin:   http://127.0.0.1:{stack.admin_port}/metrics  /healthz  /readyz\n"
        f"Logs:    {stack.workdir}\n"
        f"Demo accounts (LOCAL DEMO keys): {accounts}\n"
        f"Demo user (LOCAL DEMO issuer, roles {demo.user_roles}): {demo.user_email}; a token:"
        f" {token_command(stack, demo)}\n"
        f"Failover: ./deploy/local/run-stack status|stop NAME|restart NAME{hint} "
        f"(from another shell)\n\n"
        f"{session(stack, demo)}\n\n"
        f"{operator_commands(stack)}\n\nREADY. Ctrl-C stops everything."
    )
