"""`callstream demo` end to end: server, webhook receiver, demo sink, simulated calls, Ctrl-C."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx

from callstream.demo import DEMO_SINK
from tests.integration.server import free_port


class DemoRun:
    """`callstream demo --no-board` in a subprocess, its output read line by line."""

    def __init__(self, data_dir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CALLSTREAM_")}
        args = ["demo", "--no-board", f"--data-dir={data_dir}", f"--port={port}"]
        self.process = subprocess.Popen(
            [sys.executable, "-m", "callstream", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line)

    def next_line(self, deadline: float) -> str:
        try:
            line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
        except queue.Empty:
            raise AssertionError("demo output stopped:\n" + "".join(self.output)) from None
        self.output.append(line)
        return line

    def header(self, name: str, deadline: float) -> str:
        """The value of a header line such as ``  account_sid   AC...``."""
        while True:
            line = self.next_line(deadline)
            if line.strip().startswith(name + " "):
                return line.strip().removeprefix(name).strip()

    def wait_received(self, types: int, deadline: float) -> dict[str, int]:
        """Wait until the receiver has counted events of at least ``types`` types."""
        while True:
            line = self.next_line(deadline)
            if line.startswith("{"):
                received: dict[str, int] = json.loads(line)["received"]
                assert json.loads(line)["rejected"] == 0  # every signature checked out
                if len(received) >= types:
                    return received

    def interrupt(self) -> int:
        self.process.send_signal(signal.SIGINT)
        code = self.process.wait(60)
        while not self.lines.empty():
            self.output.append(self.lines.get())
        return code


def demo_sinks(url: str, auth: tuple[str, str]) -> list[dict[str, Any]]:
    body = httpx.get(f"{url}/v1/Sinks", auth=auth, timeout=10).json()
    return [s for s in body["sinks"] if s["description"] == DEMO_SINK]


def run_once(data_dir: Path, types: int) -> tuple[str, str]:
    """One demo run until its receiver got ``types`` event types; the demo sink's SID and
    destination."""
    port = free_port()
    demo = DemoRun(data_dir, port)
    try:
        deadline = time.monotonic() + 120
        account = (demo.header("account_sid", deadline), demo.header("auth_token", deadline))
        console = demo.header("console", deadline)
        assert console == f"http://127.0.0.1:{port}/console/"
        sink_line = demo.header("demo sink", deadline)
        match = re.fullmatch(r"(DG\w{32}) -> (\S+)", sink_line)
        assert match is not None, sink_line
        sink_sid, destination = match.groups()
        received = demo.wait_received(types, deadline)
        assert all(
            kind.startswith(("call-event.", "call-metrics.", "call-summary.")) for kind in received
        )
        sinks = demo_sinks(f"http://127.0.0.1:{port}", account)
        assert [s["sid"] for s in sinks] == [sink_sid]
        assert sinks[0]["sink_configuration"]["destination"] == destination
    finally:
        code = demo.interrupt()
    output = "".join(demo.output)
    assert code == 0, output
    assert "Traceback" not in output and output.rstrip().endswith("stopped")
    server_log = (data_dir / "demo-server.log").read_text(errors="replace")
    assert "Traceback" not in server_log
    return sink_sid, destination


def test_demo_delivers_signed_events_and_a_second_run_reuses_its_sink(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = run_once(data_dir, types=3)
    # The second run finds the demo sink of the first and does not create another: each run
    # checks the account has exactly one. The receiver gets its old port back when it is free
    # (almost always), and then the sink is the same one.
    second = run_once(data_dir, types=1)
    if second[1] == first[1]:
        assert second[0] == first[0]
