"""The network between hosts: a partition drops the two hosts' packets silently (a connect
times out) and leaves every other path; heal and a link brought back up restore them."""

from __future__ import annotations

import asyncio

from services.localmesh.netns import Host, Network


async def _listen(host: Host) -> asyncio.subprocess.Process:
    """An echo-less TCP listener on host:8000, in its namespace, ready when it prints."""
    code = (
        "import socket,sys;s=socket.socket();s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1);"
        f"s.bind(('{host.ip}',8000));s.listen(16);print('ready',flush=True)\n"
        "while True: s.accept()[0].close()"
    )
    process = await asyncio.create_subprocess_exec(
        "ip", "netns", "exec", host.netns, "python3", "-c", code,
        stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    assert process.stdout is not None
    assert await asyncio.wait_for(process.stdout.readline(), 10) == b"ready\n"
    return process


async def _connects(source: Host | None, target: Host) -> bool:
    """Whether a TCP connect from source (None: the test's own namespace) to target:8000
    succeeds within a second."""
    code = f"import socket;socket.create_connection(('{target.ip}',8000),timeout=1)"
    command = ["python3", "-c", code]
    if source is not None:
        command = ["ip", "netns", "exec", source.netns, *command]
    process = await asyncio.create_subprocess_exec(*command, stderr=asyncio.subprocess.PIPE)
    _, err = await process.communicate()
    assert process.returncode == 0 or b"timed out" in err or b"TimeoutError" in err, err
    return process.returncode == 0


async def test_a_partition_drops_packets_between_two_hosts_only(network: Network) -> None:
    a, b, c = network.add("a"), network.add("b"), network.add("c")
    listener = await _listen(b)
    try:
        assert await _connects(a, b) and await _connects(c, b) and await _connects(None, b)
        network.partition(a, b)
        assert not await _connects(a, b)  # timed out: dropped, not refused
        assert await _connects(c, b) and await _connects(None, b)
        network.heal(a, b)
        assert await _connects(a, b)
        network.link(b, up=False)
        assert not await _connects(a, b) and not await _connects(None, b)
        network.link(b, up=True)
        assert await _connects(a, b)
    finally:
        listener.kill()
        await listener.wait()
