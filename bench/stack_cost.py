"""The per-RPC CPU cost of the services' stack against bare grpc.aio, on one machine.

    python -m bench.stack_cost [--calls 20000] [--concurrency 16] [--rounds 3] [--uvloop]
                               [--profile DIR]

Starts echo servers (bench.echo) with the mesh's mutual TLS, one process each: `raw`, a bare
grpc.aio server, and `registry`, the same echo on the services' stack (runner, GrpcServer and
its interceptor, JSON logs to a file). It sends `calls` unary VerifySubscriber calls at
`concurrency` to each in turn, `rounds` times, and reports the server process's CPU time per call
(user + system, from /proc): unlike wall-clock throughput, this hardly moves when other work
shares the machine. The figure is the median of the rounds; stack/raw is the ratio of the CPU per
call (1.0: the stack costs nothing; the bench's `verify` throughput ratio is about its inverse).
--uvloop runs both servers on uvloop's event loop (IDMESH_EVENT_LOOP=uvloop); --profile records
a py-spy profile (collapsed stacks) of each server during its last round.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from bench.procs import cpu_seconds
from services.common import pki
from services.common.identity import Caller, Kind
from services.common.tls import TlsFiles
from services.localmesh.process import free_port

SERVER = Caller(Kind.OPERATOR, "beeline")
CLIENT = Caller(Kind.MESSENGER, "alpha")
ROLES = ("raw", "registry")


class EchoServer:
    def __init__(self, role: str, tls: TlsFiles, logs: Path, event_loop: str) -> None:
        self.role = role
        self.address = f"127.0.0.1:{free_port()}"
        env = {
            **os.environ,
            "IDMESH_ECHO_ROLE": role,
            "IDMESH_BIND": self.address,
            "IDMESH_LOG_FORMAT": "json",
            "IDMESH_EVENT_LOOP": event_loop,
            "IDMESH_TLS_CA": str(tls.ca),
            "IDMESH_TLS_CERT": str(tls.cert),
            "IDMESH_TLS_KEY": str(tls.key),
        }
        with open(logs / f"{role}.log", "wb") as log:  # the child holds its own descriptor
            self.process = subprocess.Popen(
                [sys.executable, "-m", "bench.echo"], env=env, stderr=log, stdout=log
            )

    def cpu(self) -> float:
        value = cpu_seconds(self.process.pid)
        if value is None:
            raise RuntimeError(f"echo {self.role} exited (status {self.process.poll()})")
        return value

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)


async def _calls(address: str, tls: TlsFiles, calls: int, concurrency: int) -> float:
    """Send calls unary calls, concurrency at a time; the wall-clock seconds they took."""
    async with grpc.aio.secure_channel(
        address,
        tls.channel_credentials(),
        options=[("grpc.ssl_target_name_override", "localhost")],
    ) as channel:
        stub = registry_pb2_grpc.RegistryServiceStub(channel)
        request = registry_pb2.VerifySubscriberRequest(
            idempotency_key="bench-stack-cost", phone_number="+79030000000"
        )
        left = calls

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                await stub.VerifySubscriber(request, timeout=30)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started


async def _wait_ready(address: str, tls: TlsFiles, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            await _calls(address, tls, 1, 1)
            return
        except grpc.aio.AioRpcError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


def _spy(pid: int, out: Path) -> subprocess.Popen[bytes] | None:
    exe = shutil.which("py-spy") or str(Path(sys.executable).parent / "py-spy")
    if not Path(exe).exists():
        print("py-spy is not installed (pip install -e '.[bench]'): no profile", file=sys.stderr)
        return None
    record = ["record", "--nonblocking", "--rate", "250", "--format", "raw"]
    return subprocess.Popen(
        [exe, *record, "--pid", str(pid), "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


async def measure(args: argparse.Namespace) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="idmesh-stack-cost-"))
    files = pki.ensure_pki(work / "pki", [SERVER, CLIENT], dns_names={SERVER: ["localhost"]})
    servers = {
        role: EchoServer(role, files[SERVER], work, "uvloop" if args.uvloop else "asyncio")
        for role in ROLES
    }
    per_call: dict[str, list[float]] = {role: [] for role in ROLES}
    try:
        for server in servers.values():
            await _wait_ready(server.address, files[CLIENT])
            await _calls(server.address, files[CLIENT], args.warmup, args.concurrency)
        for round_ in range(args.rounds):
            for role, server in servers.items():
                spy = None
                if args.profile and round_ == args.rounds - 1:
                    args.profile.mkdir(parents=True, exist_ok=True)
                    spy = _spy(server.process.pid, args.profile / f"stack-cost-{role}.txt")
                before = server.cpu()
                wall = await _calls(server.address, files[CLIENT], args.calls, args.concurrency)
                cpu = server.cpu() - before
                if spy is not None:
                    spy.send_signal(signal.SIGINT)  # py-spy writes its profile on SIGINT
                    spy.wait(30)
                per_call[role].append(cpu / args.calls * 1e6)
                print(
                    f"round {round_ + 1} {role:8} {cpu / args.calls * 1e6:7.1f} us CPU/call, "
                    f"{args.calls / wall:7.0f} calls/s",
                    flush=True,
                )
    finally:
        for server in servers.values():
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    return per_call


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stack_cost", description=__doc__)
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--warmup", type=int, default=2_000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--uvloop", action="store_true", help="both servers on uvloop")
    parser.add_argument("--profile", type=Path, help="py-spy profiles of the last round here")
    args = parser.parse_args(argv)
    per_call = asyncio.run(measure(args))
    raw = statistics.median(per_call["raw"])
    stack = statistics.median(per_call["registry"])
    loop = "uvloop" if args.uvloop else "asyncio"
    print(
        f"median CPU per call ({loop}): raw {raw:.1f} us, stack {stack:.1f} us, "
        f"stack/raw {stack / raw:.2f} (raw/stack {raw / stack:.2f})"
    )


if __name__ == "__main__":
    main()
