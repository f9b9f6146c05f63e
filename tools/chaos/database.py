"""The PostgreSQL under a chaos run: a primary and (optionally) a streaming standby, each behind a
latency proxy, and the database faults: crash-restart, failover and added latency.

The services reach the servers through one multi-host URL naming the proxies
(target_session_attrs=read-write), so a promotion is followed the way a deployment follows one.
On a network of hosts (services.localmesh.netns) the servers and their proxies share one host,
the database's: a partition between a replica's host and it cuts the replica from both servers.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

from services.localmesh.netns import Host
from services.localmesh.postgres import PostgresCluster

# Settings of the run's servers: room for every replica's pool and listeners.
SETTINGS = {"max_connections": "200"}
CLONE_NEWNET = 0x40000000  # setns(2): join a network namespace


def _enter_netns(netns: str) -> None:
    """Move the calling thread (only it: a thread's network namespace is its own) into netns,
    so that the sockets it makes from now on live there."""
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/var/run/netns/{netns}", os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            errno = ctypes.get_errno()
            raise OSError(errno, f"setns into {netns}: {os.strerror(errno)}")
    finally:
        os.close(fd)


class LatencyProxy:
    """A TCP forwarder on 127.0.0.1 (or, with netns, on the server's own address in that
    namespace) to a server, adding `delay` seconds to each chunk it forwards either way (order
    kept). Runs its own event loop in a thread, so the chaos driver's load does not time it."""

    def __init__(self, host: str, port: int, *, netns: str | None = None) -> None:
        self.target = (host, port)
        self.listen_host = "127.0.0.1" if netns is None else host
        self.netns = netns
        self.delay = 0.0
        self._error: BaseException | None = None
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._run, name="latency-proxy", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._server is None:
            raise RuntimeError(f"the latency proxy did not start: {self._error}")
        self.port: int = self._server.sockets[0].getsockname()[1]

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def listen() -> None:
            self._server = await asyncio.start_server(self._client, self.listen_host, 0)

        try:
            if self.netns is not None:
                _enter_netns(self.netns)
            self._loop.run_until_complete(listen())
        except OSError as exc:
            self._error = exc
            self._loop.close()
            return
        finally:
            self._ready.set()
        self._loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.close()  # the server is down: the client sees its connection closed
            return
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                if self.delay:
                    await asyncio.sleep(self.delay)
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    def close(self) -> None:
        async def shut() -> None:
            if self._server is not None:
                self._server.close()
            for task in asyncio.all_tasks():
                if task is not asyncio.current_task():
                    task.cancel()

        asyncio.run_coroutine_threadsafe(shut(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


class Database:
    """The run's servers: `primary` takes writes; `standby`, when there is one, streams from it
    synchronously (a promotion loses nothing acknowledged)."""

    def __init__(
        self, primary: PostgresCluster, standby: PostgresCluster | None, host: Host | None = None
    ) -> None:
        self.primary = primary
        self.standby = standby
        self.host = host  # the database's host on a network of hosts, or None: 127.0.0.1
        self.proxies = {
            id(server): LatencyProxy(server.host, server.port, netns=server.netns)
            for server in (primary, standby)
            if server is not None
        }
        ports = ",".join(f"{p.listen_host}:{p.port}" for p in self.proxies.values())
        self.url = f"postgresql://postgres@{ports}/postgres?target_session_attrs=read-write"

    @classmethod
    @contextmanager
    def create(cls, *, standby: bool, host: Host | None = None) -> Iterator[Database]:
        """host: run the servers and their proxies on that host (its namespace and address)."""
        with ExitStack() as stack:
            where = {} if host is None else {"host": host.ip, "netns": host.netns}
            primary = stack.enter_context(PostgresCluster.create(settings=SETTINGS, **where))
            second = stack.enter_context(primary.standby()) if standby else None
            database = cls(primary, second, host)
            try:
                yield database
            finally:
                for proxy in database.proxies.values():
                    proxy.close()
                # the servers may have swapped roles: stop both (the clusters' own exits only
                # stop what still runs)
                for server in (database.primary, database.standby):
                    if server is not None and server.running():
                        with contextlib.suppress(Exception):
                            server.stop("fast")

    def crash_restart(self, seconds: float) -> None:
        """pg_ctl stop -m immediate of the primary, started again `seconds` later (blocking)."""
        self.primary.stop("immediate")
        time.sleep(seconds)
        self.primary.start()

    def failover(self) -> None:
        """The primary crashes, the standby is promoted; then the old primary is rebuilt as the
        new primary's synchronous standby (blocking). Between the promotion and the rebuilt
        standby's start, commits are acknowledged by the new primary alone."""
        if self.standby is None:
            raise RuntimeError("failover needs a standby")
        old, new = self.primary, self.standby
        old.stop("immediate")
        new.promote()
        self.primary, self.standby = new, old
        old.follow(new)

    def set_latency(self, seconds: float) -> None:
        for proxy in self.proxies.values():
            proxy.delay = seconds

    def heal(self) -> list[str]:
        """The primary (and standby) running, no latency; what it had to do."""
        done = []
        self.set_latency(0.0)
        if not self.primary.running():
            self.primary.start()
            done.append("started the primary")
        if self.standby is not None and not self.standby.running():
            self.standby.follow(self.primary)
            done.append("rebuilt the standby")
        return done
