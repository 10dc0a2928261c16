"""The settings the operator tools run with: the edge's own (``EdgeSettings``), read from the
file ``--config`` names (else ``EDGE_CONFIG`` / ``EDGE_*``), plus one table the edge ignores::

    [operator_credentials]        # LOCAL DEMO ONLY: DynamoDB Local ignores credentials
    aws_access_key_id = "local"
    aws_secret_access_key = "local"

AWS clients need some credentials to sign with even when the endpoint ignores them, so the
local stack's config carries dummy ones and every operator command it prints runs as printed,
with nothing in the environment. They are used only when the environment names no access key
of its own; a real deployment leaves the table out and the usual AWS credential chain applies.
"""

from __future__ import annotations

import os
from collections.abc import MutableMapping

from edge_router.config import ConfigError, EdgeSettings
from residency_contract.settings import ConfigSource

CREDENTIALS_TABLE = "operator_credentials"
# table key -> the environment variable botocore reads
_CREDENTIALS = {
    "aws_access_key_id": "AWS_ACCESS_KEY_ID",
    "aws_secret_access_key": "AWS_SECRET_ACCESS_KEY",
}


def load_settings(
    config: str | None, environ: MutableMapping[str, str] | None = None
) -> EdgeSettings:
    """The edge's settings from ``config`` (or the environment's ``EDGE_CONFIG``); the file's
    operator credentials, if any, go into ``environ`` (the process's) for every AWS client."""
    env = os.environ if environ is None else environ
    source = dict(env) if config is None else {**env, "EDGE_CONFIG": config}
    settings = EdgeSettings.from_env(source)
    table = ConfigSource("EDGE_", source).raw_table(CREDENTIALS_TABLE)
    if table and set(table) != set(_CREDENTIALS):
        raise ConfigError(
            f"[{CREDENTIALS_TABLE}] must hold exactly {sorted(_CREDENTIALS)} (strings)"
        )
    if table and "AWS_ACCESS_KEY_ID" not in env:
        for name, variable in _CREDENTIALS.items():
            env[variable] = str(table[name])
    return settings
