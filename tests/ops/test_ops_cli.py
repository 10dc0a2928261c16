"""``residency-ops``'s front: the command table, the settings it runs with (``--config``, the
dummy credentials a local config may carry), and the edge's CLI keeping only ``serve``."""

from __future__ import annotations

from pathlib import Path

import pytest

from edge_router.__main__ import main as edge_main
from edge_router.config import ConfigError
from residency_ops.__main__ import main as ops_main
from residency_ops.commands import COMMANDS, load
from residency_ops.settings import load_settings

CONFIG = """
registry_table = "account-registry"
registry_endpoint = "http://127.0.0.1:1"

[regions."eu-west-1"]
instances = ["http://127.0.0.1:2"]
assertion_secret = "test-secret-eu-west-1-0000"
table = "profiles"
"""
CREDENTIALS = """
[operator_credentials]
aws_access_key_id = "local"
aws_secret_access_key = "local-secret"
"""


def config(tmp_path: Path, text: str) -> str:
    path = tmp_path / "edge.toml"
    path.write_text(text)
    return str(path)


def test_every_command_module_has_the_commands_interface() -> None:
    for name in COMMANDS:
        module = load(name)
        assert callable(module.add_arguments) and callable(module.run), name


def test_the_config_names_the_registry_and_the_regions(tmp_path: Path) -> None:
    env: dict[str, str] = {}
    settings = load_settings(config(tmp_path, CONFIG), env)
    assert settings.registry_table == "account-registry"
    assert [r.name for r in settings.regions] == ["eu-west-1"]
    assert env == {}  # no credentials in the file: the AWS chain alone


def test_the_configs_credentials_serve_only_an_environment_without_its_own(
    tmp_path: Path,
) -> None:
    path = config(tmp_path, CONFIG + CREDENTIALS)
    env: dict[str, str] = {}
    load_settings(path, env)
    assert env == {"AWS_ACCESS_KEY_ID": "local", "AWS_SECRET_ACCESS_KEY": "local-secret"}
    own = {"AWS_ACCESS_KEY_ID": "mine", "AWS_SECRET_ACCESS_KEY": "my-secret"}
    load_settings(path, own)
    assert own == {"AWS_ACCESS_KEY_ID": "mine", "AWS_SECRET_ACCESS_KEY": "my-secret"}


def test_a_half_written_credentials_table_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = config(tmp_path, CONFIG + '\n[operator_credentials]\naws_access_key_id = "x"\n')
    with pytest.raises(ConfigError, match="operator_credentials"):
        load_settings(path, {})
    assert ops_main(["--config", path, "registry", "list"]) == 2
    assert "configuration error" in capsys.readouterr().err


def test_the_edge_cli_serves_and_nothing_else(capsys: pytest.CaptureFixture[str]) -> None:
    for moved in ("registry", "account", "residency", "token"):
        with pytest.raises(SystemExit) as exit_:
            edge_main([moved, "list"])
        assert exit_.value.code == 2, moved
    with pytest.raises(SystemExit):
        ops_main(["--help"])
    out = capsys.readouterr().out
    assert all(name in out for name in COMMANDS)
