"""A real `callstream serve` in a subprocess, for tests that go through the public API."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from tests.integration.backends import SESSION

ACCOUNT_SID = "AC" + "a1" * 16
AUTH_TOKEN = "token-" + "b2" * 13


class PortTaken(RuntimeError):
    """The server could not bind its port: another process took it first."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Server:
    data_dir: Path
    port: int = field(default_factory=free_port)
    extra_env: dict[str, str] = field(default_factory=dict)
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    command: list[str] = field(default_factory=lambda: ["serve"])
    """What to run after ``python -m callstream``: serve, or e.g. worker --role engine."""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self, username: str = ACCOUNT_SID, password: str = AUTH_TOKEN) -> httpx.Client:
        return httpx.Client(base_url=self.url, auth=(username, password), timeout=30.0)

    def start(self, timeout: float = 30.0) -> Server:
        # free_port() can only pick a port that was free a moment ago; another process may
        # take it first. A server that could not bind is started again on a new port.
        for _ in range(4):
            try:
                self._start_once(timeout)
                return self
            except PortTaken:
                self.port = free_port()
        self._start_once(timeout)
        return self

    def _start_once(self, timeout: float) -> None:
        # CALLSTREAM_TEST_BACKEND=nats: this data dir's own database and NATS account.
        distributed = SESSION.distributed
        backend_env = (
            distributed.env(self.data_dir)
            if distributed is not None and "CALLSTREAM_BACKEND" not in self.extra_env
            else {}
        )
        env = {
            **os.environ,
            **backend_env,
            "CALLSTREAM_DATA_DIR": str(self.data_dir),
            "CALLSTREAM_PORT": str(self.port),
            "CALLSTREAM_ACCOUNT_SID": ACCOUNT_SID,
            "CALLSTREAM_AUTH_TOKEN": AUTH_TOKEN,
            **self.extra_env,
        }
        self.log_path = self.data_dir.parent / f"server-{self.port}.log"
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "callstream", *self.command],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_healthy(timeout)

    def _wait_healthy(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        assert self.process is not None
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                logs = self.logs()
                if "address already in use" in logs.lower():
                    raise PortTaken(self.port)
                raise RuntimeError(f"server exited with {self.process.returncode}: {logs}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1.0).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.05)  # polling interval while waiting on a condition with a deadline
        raise TimeoutError(f"server not healthy within {timeout}s: {self.logs()}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path else ""

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20.0) -> int:
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(sig)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        return self.process.returncode
