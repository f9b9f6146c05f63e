"""The process: starts from the environment, applies the seed, serves, stops on SIGTERM."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc
from idmesh.registry.v1 import registry_pb2, registry_pb2_grpc

from services.common.channels import open_channel
from services.common.identity import Caller, Kind, Role
from tests.eventually import eventually

from .conftest import NUMBER
from .test_relay import free_port

ROOT = Path(__file__).resolve().parents[2]


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "services.operator_registry",
        cwd=ROOT,
        env={"PATH": os.environ.get("PATH", ""), "IDMESH_LOG_FORMAT": "json", **env},
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )


def base_env(tmp_path: Path, port: int) -> dict[str, str]:
    return {
        "IDMESH_OPERATOR_ID": "beeline",
        "IDMESH_DB_PATH": str(tmp_path / "reg.db"),
        "IDMESH_NOTIFIER_ADDRESS": "127.0.0.1:1",  # nothing listens: the relay keeps retrying
        "IDMESH_BIND": f"127.0.0.1:{port}",
        "IDMESH_INSECURE_DEV_MODE": "true",
    }


async def test_process_serves_the_seeded_registry_and_stops_on_sigterm(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(
        json.dumps(
            {
                "messengers": [{"messenger_id": "alpha"}],
                "subscribers": [{"phone_number": NUMBER, "contract_id": "BEE-1"}],
            }
        )
    )
    port = free_port()
    process = await start({**base_env(tmp_path, port), "IDMESH_SEED_FILE": str(seed)})
    lines: list[str] = []
    reader = asyncio.create_task(collect(process, lines))
    try:
        async with open_channel(f"127.0.0.1:{port}", identity=None) as channel:
            health = health_pb2_grpc.HealthStub(channel)

            async def serving() -> bool:
                try:
                    reply = await health.Check(health_pb2.HealthCheckRequest(), timeout=1)
                except grpc.aio.AioRpcError:
                    return False
                return bool(reply.status == health_pb2.HealthCheckResponse.SERVING)

            await eventually(serving, within=30, what="health SERVING")
        alpha = Caller(Kind.MESSENGER, "alpha")
        async with open_channel(f"127.0.0.1:{port}", identity=alpha) as channel:
            reply = await registry_pb2_grpc.RegistryServiceStub(channel).VerifySubscriber(
                registry_pb2.VerifySubscriberRequest(idempotency_key="r1", phone_number=NUMBER),
                timeout=5,
            )
        assert reply.result == registry_pb2.VERIFICATION_RESULT_IDENTIFIED
        admin = Caller(Kind.OPERATOR, "beeline", Role.ADMIN)
        async with open_channel(f"127.0.0.1:{port}", identity=admin) as channel:
            terminated = await registry_pb2_grpc.RegistryAdminServiceStub(
                channel
            ).TerminateContract(registry_pb2.TerminateContractRequest(phone_number=NUMBER))
        assert terminated.notices_queued == 1
        # Nothing listens at the notifier address: the relay is retrying when SIGTERM comes.
        await eventually(
            lambda: any("relay.publish_failed" in line for line in lines),
            what="a failed publish",
        )
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGTERM)
        async with asyncio.timeout(15):
            await process.wait()
            await reader
    output = "".join(lines)
    assert process.returncode == 0, output
    events = [json.loads(line)["event"] for line in lines if line.startswith("{")]
    assert "seed.applied" in events
    assert events.index("server.stopped") < events.index("relay.stopped")
    assert NUMBER not in output
    assert reply.identification_code not in output


async def collect(process: asyncio.subprocess.Process, lines: list[str]) -> None:
    assert process.stderr is not None
    async for line in process.stderr:
        lines.append(line.decode())


async def test_process_with_a_bad_seed_exits_naming_the_file_and_entry(tmp_path: Path) -> None:
    seed = tmp_path / "seed.json"
    seed.write_text(json.dumps({"subscribers": [{"phone_number": "+74951234567"}]}))
    process = await start({**base_env(tmp_path, free_port()), "IDMESH_SEED_FILE": str(seed)})
    async with asyncio.timeout(15):
        _, stderr = await process.communicate()
    assert process.returncode == 2
    assert f"seed file {seed}: subscribers[0]" in stderr.decode()


async def test_process_with_bad_configuration_exits_naming_the_variable(tmp_path: Path) -> None:
    env = base_env(tmp_path, free_port())
    del env["IDMESH_OPERATOR_ID"]
    process = await start(env)
    async with asyncio.timeout(15):
        _, stderr = await process.communicate()
    assert process.returncode == 2
    assert "IDMESH_OPERATOR_ID: required, not set" in stderr.decode()
