"""A throwaway Ray head for tests, and worker nodes joining it on loopback: own temp dir and
ports, each node stopped by killing exactly its processes.

`ray stop` is never used: it kills every Ray process on the machine, including other users'
in-process clusters. Every process of a node inherits a unique marker variable from its
`ray start`, so a node's processes are found through /proc/<pid>/environ and nothing else.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
import uuid
from contextlib import ExitStack, suppress
from dataclasses import dataclass
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
MARKER = "DELIFT_TEST_RAY_HEAD"
NODE_PORT_FLAGS = (  # the ports every node (head or worker) listens on
    "--dashboard-agent-listen-port",
    "--dashboard-agent-grpc-port",
    "--runtime-env-agent-port",
    "--metrics-export-port",
    "--node-manager-port",
    "--object-manager-port",
)
PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", *NODE_PORT_FLAGS)


@dataclass
class RayHead:
    """One single-node Ray head started with `ray start --head`, and the env to talk to it."""

    temp_dir: Path
    ports: dict[str, int]
    env: dict[str, str]
    start_seconds: float = float("nan")

    @classmethod
    def create(cls, temp_dir: Path) -> RayHead:
        """Pick free ports and build the environment; starts nothing."""
        path = os.pathsep.join([str(VENV_BIN), os.environ.get("PATH", "")])
        env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        env.update(
            PATH=path,
            RAY_AUTH_MODE="disabled",
            RAY_USAGE_STATS_ENABLED="0",
            HF_HUB_OFFLINE="1",
            TRANSFORMERS_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
        )
        env[MARKER] = uuid.uuid4().hex
        return cls(temp_dir, dict(zip(PORT_FLAGS, free_ports(len(PORT_FLAGS)), strict=True)), env)

    @property
    def dashboard_url(self) -> str:
        """The Jobs API / dashboard address, for `ray job --address`."""
        return f"http://127.0.0.1:{self.ports['--dashboard-port']}"

    @property
    def address(self) -> str:
        """The GCS address, for RAY_ADDRESS and `ray start --address`."""
        return f"127.0.0.1:{self.ports['--port']}"

    def start(self, num_cpus: int = 4, timeout: float = 120) -> None:
        """Run `ray start --head` and wait for the Jobs API; RuntimeError with its output if not."""
        log = self.temp_dir / "ray-start.log"
        cmd = [
            str(VENV_BIN / "ray"),
            "start",
            "--head",
            "--dashboard-host=127.0.0.1",
            f"--num-cpus={num_cpus}",
            f"--temp-dir={self.temp_dir}",
            "--disable-usage-stats",
            *(f"{flag}={port}" for flag, port in self.ports.items()),
        ]
        t0 = time.perf_counter()
        ray_start(cmd, self.env, log, timeout)
        self._wait_for_jobs_api(deadline=t0 + timeout)
        self.start_seconds = time.perf_counter() - t0

    def worker(self, name: str) -> RayWorker:
        """A worker node for this head with its own marker and ports; starts nothing."""
        ports = dict(zip(NODE_PORT_FLAGS, free_ports(len(NODE_PORT_FLAGS)), strict=True))
        return RayWorker(name, self, {**self.env, MARKER: uuid.uuid4().hex}, ports)

    def _wait_for_jobs_api(self, deadline: float) -> None:
        while True:
            try:
                with urllib.request.urlopen(f"{self.dashboard_url}/api/version", timeout=5):
                    return
            except OSError as e:
                if time.perf_counter() > deadline:
                    raise RuntimeError(f"Jobs API at {self.dashboard_url} not up: {e}") from None
                time.sleep(0.5)

    def ray(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Run this venv's `ray` CLI with the head's environment; output captured as text."""
        return subprocess.run(
            [str(VENV_BIN / "ray"), *args],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def pids(self) -> list[int]:
        """Live processes that carry this head's marker."""
        return marked_pids(MARKER, self.env[MARKER])

    def stop(self, grace: float = 3) -> list[int]:
        """SIGTERM then SIGKILL every process of this head; returns any still alive. (A test head
        holds nothing worth a long grace; some of its processes outlast SIGTERM.)"""
        return stop_marked(self.env[MARKER], ((signal.SIGTERM, grace), (signal.SIGKILL, 5.0)))


@dataclass
class RayWorker:
    """One worker node of a RayHead; its processes carry their own marker."""

    name: str
    head: RayHead
    env: dict[str, str]
    ports: dict[str, int]

    def start(self, num_cpus: int, num_gpus: int = 0, timeout: float = 120) -> None:
        """Run `ray start --address` on loopback; the node also advertises one unit of the
        resource named after it, so it can be found in the node list."""
        cmd = [
            str(VENV_BIN / "ray"),
            "start",
            f"--address={self.head.address}",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={num_cpus}",
            f"--num-gpus={num_gpus}",
            f"--resources={json.dumps({self.name: 1})}",
            f"--temp-dir={self.head.temp_dir}",
            "--disable-usage-stats",
            *(f"{flag}={port}" for flag, port in self.ports.items()),
        ]
        ray_start(cmd, self.env, self.head.temp_dir / f"ray-start-{self.name}.log", timeout)

    def pids(self) -> list[int]:
        """Live processes of this node (its raylet, agents and workers)."""
        return marked_pids(MARKER, self.env[MARKER])

    def kill(self) -> list[int]:
        """SIGKILL every process of this node at once (a node lost); returns any still alive."""
        return stop_marked(self.env[MARKER], ((signal.SIGKILL, 5.0),))


def ray_start(cmd: list[str], env: dict[str, str], log: Path, timeout: float) -> None:
    """Run one `ray start` command; RuntimeError with its output if it fails."""
    # Output goes to a file: the daemons may inherit the handles, and a pipe would never close.
    with log.open("w") as out:
        try:
            rc = subprocess.run(
                cmd, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=timeout
            ).returncode
        except subprocess.TimeoutExpired:
            rc = None
    if rc != 0:
        raise RuntimeError(f"ray start failed (rc={rc}):\n{log.read_text()}")


def stop_marked(value: str, signals: tuple[tuple[signal.Signals, float], ...]) -> list[int]:
    """Send each signal in turn to the processes marked `value` until none is left or its wait
    runs out; returns any still alive."""
    for sig, wait in signals:
        deadline = time.perf_counter() + wait
        while (pids := marked_pids(MARKER, value)) and time.perf_counter() < deadline:
            for pid in pids:
                with suppress(ProcessLookupError):
                    os.kill(pid, sig)
            time.sleep(0.5)
    return marked_pids(MARKER, value)


def free_ports(n: int) -> list[int]:
    """n distinct TCP ports free on 127.0.0.1 right now."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]


def marked_pids(key: str, value: str) -> list[int]:
    """Pids of non-zombie processes whose environment has key=value."""
    needle = f"{key}={value}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle not in (proc / "environ").read_bytes().split(b"\0"):
                continue
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            found.append(int(proc.name))
    return found
