"""One service of a local mesh as a process of its own, and waiting for it to serve."""

from __future__ import annotations

import os
import random
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from services.common.identity import Caller
from services.common.tls import TlsFiles
from services.localmesh.spec import ROOT, MeshError


@dataclass
class ServiceProcess:
    name: str  # e.g. "registry-beeline", "notifier", "gateway-alpha" (replicas: "gateway-alpha-2")
    module: str
    address: str
    env: dict[str, str]
    log_path: Path
    info: dict[str, Any]
    identity: Caller
    tls: TlsFiles | None = None
    process: subprocess.Popen[bytes] | None = None
    launcher_fd: int | None = None  # the read end of the launcher's pipe (IDMESH_LAUNCHER_FD)
    netns: str | None = None  # runs in this network namespace (`ip netns exec`; netns.py)

    def start(self) -> None:
        if self.process is not None and self.process.poll() is None:
            raise RuntimeError(f"{self.name} is already running")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **self.env}
        if self.launcher_fd is not None:
            env["IDMESH_LAUNCHER_FD"] = str(self.launcher_fd)
        with self.log_path.open("ab") as log:
            # `ip netns exec` enters the namespace and execs the service: same process id
            netns = ["ip", "netns", "exec", self.netns] if self.netns is not None else []
            self.process = subprocess.Popen(
                [*netns, sys.executable, "-m", self.module],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
                start_new_session=True,  # Ctrl-C in a terminal reaches only `idmesh up`
                pass_fds=() if self.launcher_fd is None else (self.launcher_fd,),
            )

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def signal(self, signum: int) -> None:
        if self.running:
            assert self.process is not None
            self.process.send_signal(signum)

    def wait(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


def wait_serving(svc: ServiceProcess, timeout: float = 30.0) -> None:
    """Until svc's gRPC health says SERVING (bounded); MeshError, with the log's tail, if the
    process exits first or the bound passes."""
    deadline = time.monotonic() + timeout
    if svc.tls is not None:
        channel = grpc.secure_channel(svc.address, svc.tls.channel_credentials())
    else:
        channel = grpc.insecure_channel(svc.address)
    with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        while True:
            if not svc.running:
                raise MeshError(
                    f"{svc.name} exited with status {svc.process and svc.process.returncode}; "
                    f"see {svc.log_path}:\n{tail(svc.log_path)}"
                )
            try:
                reply = stub.Check(health_pb2.HealthCheckRequest(), timeout=1.0)
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise MeshError(
                    f"{svc.name} did not become SERVING within {timeout:.0f}s; see {svc.log_path}"
                )
            time.sleep(0.05)


# Ports for the mesh's servers are taken below the kernel's ephemeral range: the ports every
# outgoing connection (and every bind to port 0) takes come from that range, so a port chosen
# there could be taken by another process's connection between the choice and the server's
# bind (a PostgreSQL pool opening its connections while the mesh starts, say).
_EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
_LOWEST = 10_000


def ephemeral_low() -> int:
    """The lowest port of the kernel's ephemeral range (32768 where it cannot be read)."""
    try:
        return int(_EPHEMERAL_RANGE.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port(reserved: set[int] | None = None) -> int:
    """A free TCP port on 127.0.0.1 below the ephemeral range, not in reserved (added to it)."""
    reserved = set() if reserved is None else reserved
    high = max(_LOWEST + 1, ephemeral_low())
    for _ in range(10_000):
        port = random.randrange(_LOWEST, high)
        if port not in reserved and port_free(f"127.0.0.1:{port}"):
            reserved.add(port)
            return port
    raise MeshError(f"no free TCP port on 127.0.0.1 between {_LOWEST} and {high}")


def port_free(address: str) -> bool:
    host, _, port = address.rpartition(":")
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"
