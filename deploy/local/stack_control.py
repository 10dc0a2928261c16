"""The running local stack's supervision and its control socket (``stack.py`` starts them).

While the stack runs, ``supervise`` watches its processes: a store (or the edge) that exits is
said once, naming the process and its region, and the others keep running; a DynamoDB Local
that exits ends the stack (its data is gone). From another shell, ``run-stack status | stop
NAME | restart NAME`` talks to it over a Unix socket found by the edge port: one JSON line
each way (``control`` is that client, ``listen`` and ``_serve_one`` the stack's side).

The stack is ``stack.Stack`` (its ``current()``, ``stop_process``, ``restart_process``,
``specs``, ``ready_urls``, ``region_of`` and ``ddbs``); this module does not import it: both
run as siblings of a script.
"""

from __future__ import annotations

import json
import os
import select
import socket
import sys
import tempfile
from pathlib import Path
from typing import Any


def say(msg: str) -> None:
    print(f"[stack] {msg}", file=sys.stderr, flush=True)


def control_path(edge_port: int) -> Path:
    """Where the stack on ``edge_port`` listens for ``status``/``stop``/``restart``."""
    return Path(tempfile.gettempdir()) / f"residency-stack-{edge_port}.sock"


def _what(stack: Any, name: str) -> str:
    region = stack.region_of.get(name)
    return f"{name} ({region})" if region else name


def _status(stack: Any) -> list[str]:
    lines = []
    for name, proc in stack.current().items():
        code = proc.poll()
        state = "running" if code is None else f"exited (code {code})"
        url = stack.ready_urls.get(name, "").removesuffix("/readyz")
        lines.append(
            f"{name:<20} {stack.region_of.get(name, '-'):<10} {url:<24} pid {proc.pid:<8} {state}"
        )
    return lines


def _name(stack: Any, raw: str) -> str | None:
    for name in (raw, f"store-{raw}"):
        if name in stack.specs and name in stack.ready_urls:
            return name
    return None


def _command(stack: Any, request: dict[str, str], reported: set[int]) -> dict[str, object]:
    command = request.get("command")
    if command == "status":
        return {"ok": True, "lines": _status(stack)}
    name = _name(stack, request.get("name") or "")
    if name is None:
        known = ", ".join(n for n in stack.current() if n in stack.ready_urls)
        return {"ok": False, "lines": [f"no such process {request.get('name')!r}; one of: {known}"]}
    reported.add(stack.current()[name].pid)  # stopped on request: not news when it exits
    if command == "stop":
        code = stack.stop_process(name)
        say(f"{_what(stack, name)} stopped on request (code {code})")
        return {"ok": True, "lines": [f"{name} stopped (code {code})"]}
    if command == "restart":
        say(f"restarting {_what(stack, name)} on request ...")
        try:
            proc = stack.restart_process(name)
        except RuntimeError as exc:
            say(f"{_what(stack, name)} did not start: {exc}")
            return {"ok": False, "lines": [f"{name} did not start: {exc}"]}
        say(f"{_what(stack, name)} is running again (pid {proc.pid})")
        return {"ok": True, "lines": [f"{name} restarted (pid {proc.pid}) and ready"]}
    return {"ok": False, "lines": [f"unknown command {command!r}"]}


def _recv_line(conn: socket.socket) -> bytes:
    """What the peer sends up to its newline (the control protocol's one JSON line each way),
    or until it closes (then without the newline)."""
    data = b""
    while not data.endswith(b"\n"):
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
    return data


def _serve_one(stack: Any, server: socket.socket, reported: set[int]) -> None:
    conn, _ = server.accept()
    with conn:
        conn.settimeout(5)
        try:
            data = _recv_line(conn)
            if not data.endswith(b"\n"):
                return
            answer = _command(stack, json.loads(data), reported)
            conn.settimeout(None)
            conn.sendall(json.dumps(answer).encode() + b"\n")
        except (OSError, ValueError) as exc:
            say(f"control request failed: {exc}")


def supervise(stack: Any, server: socket.socket, workdir: Path, hint: str) -> int:
    """Watch the processes and answer control requests until Ctrl-C / SIGTERM. A store or the
    edge exiting is said once (and again after each restart); the others keep running. A
    DynamoDB Local exiting ends the stack: its data is gone."""
    reported: set[int] = set()
    while True:
        ready, _, _ = select.select([server], [], [], 0.5)
        if ready:
            _serve_one(stack, server, reported)
        for name, proc in stack.current().items():
            if proc.poll() is not None and proc.pid not in reported:
                reported.add(proc.pid)
                say(
                    f"{_what(stack, name)} exited with code {proc.returncode}; the other "
                    f"processes keep running (log: {workdir}/{name}.log; "
                    f"start it again: ./deploy/local/run-stack restart {name}{hint})"
                )
        for region, ddb in stack.ddbs.items():
            if ddb.process.poll() is not None:
                say(f"DynamoDB Local for {region} exited; its data is gone: stopping the stack")
                return 1


def control(edge_port: int, request: dict[str, str]) -> int:
    """``status`` / ``stop`` / ``restart``: ask the running stack, print its answer."""
    path = control_path(edge_port)
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as conn:
            conn.settimeout(120)  # a restart waits up to 60 s for the store to be ready
            conn.connect(str(path))
            conn.sendall(json.dumps(request).encode() + b"\n")
            data = _recv_line(conn)
    except OSError as exc:
        say(
            f"no running stack on edge port {edge_port} ({path}: {exc}); start one with "
            "./deploy/local/run-stack"
        )
        return 2
    answer = json.loads(data)
    for line in answer["lines"]:
        print(line, flush=True)
    return 0 if answer["ok"] else 1


def listen(edge_port: int) -> socket.socket:
    path = control_path(edge_port)
    if path.exists():
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            try:
                probe.connect(str(path))
            except OSError:
                path.unlink()  # left by a stack that did not stop cleanly
            else:
                raise RuntimeError(f"another stack already runs on edge port {edge_port}")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    os.chmod(path, 0o600)
    server.listen(4)
    return server
