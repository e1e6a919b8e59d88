"""Processes the benchmarks start: callstream itself and the bare-stack ceiling."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import psutil

ACCOUNT_SID = "AC" + "be" * 16
AUTH_TOKEN = "bench-token-" + "0" * 20


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url} exited with {process.returncode}")
        try:
            httpx.get(url, timeout=1.0)
            return
        except httpx.TransportError:
            time.sleep(0.05)
    raise TimeoutError(f"{url} did not come up")


class Process:
    def __init__(self, args: list[str], env: dict[str, str], health: str, port: int) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.popen = subprocess.Popen(
            args, env={**os.environ, **env}, stdin=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        wait_until_up(self.url + health, self.popen)

    def rss_mb(self) -> float:
        return float(psutil.Process(self.popen.pid).memory_info().rss) / 2**20

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(30)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait()


def callstream(data_dir: Path, roles: str = "all", **settings: str) -> Process:
    port = free_port()
    env = {
        "CALLSTREAM_DATA_DIR": str(data_dir),
        "CALLSTREAM_PORT": str(port),
        "CALLSTREAM_ACCOUNT_SID": ACCOUNT_SID,
        "CALLSTREAM_AUTH_TOKEN": AUTH_TOKEN,
        "CALLSTREAM_ROLES": roles,
        **{f"CALLSTREAM_{k.upper()}": v for k, v in settings.items()},
    }
    return Process([sys.executable, "-m", "callstream", "serve"], env, "/healthz", port)


def ceiling() -> Process:
    port = free_port()
    return Process([sys.executable, "-m", "bench.ceiling_server", str(port)], {}, "/", port)
