"""Hosts of their own for a local mesh's processes: Linux network namespaces on a bridge, and
the faults of a network between hosts (a link cut, a partition between two hosts that drops their
packets silently, latency and loss with tc netem where the kernel has it). Needs root (or
CAP_NET_ADMIN): `Network.available()` says whether this machine allows it.

    with Network.create() as net:
        db = net.add("db")                  # a namespace, its address on the bridge
        gw = net.add("gw1")
        net.partition(gw, db)               # packets between the two are dropped both ways
        net.heal(gw, db)
        net.netem(gw, delay_ms=100, loss_percent=5)

Everything lives in namespaces of its own (the bridge too) but one veth whose end in the
caller's namespace holds the subnet's first address, so that the caller reaches every host.
Names carry a random tag: two networks (two test runs) coexist.
"""

from __future__ import annotations

import random
import secrets
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from services.localmesh.spec import MeshError

NOWHERE = "02:00:00:00:0d:ad"  # a locally administered address: no host on the bridge has it


@dataclass(frozen=True)
class Host:
    """A namespace on the bridge: where a process runs and the address it listens on."""

    name: str
    netns: str
    ip: str
    veth: str  # the link's end on the bridge (in the bridge's namespace)


def _ip(*args: str, netns: str | None = None) -> None:
    command = ["ip", *args] if netns is None else ["ip", "-n", netns, *args]
    done = subprocess.run(command, capture_output=True, text=True, timeout=30)
    if done.returncode != 0:
        raise MeshError(f"`{' '.join(command)}` failed: {done.stderr.strip()}")


class Network:
    def __init__(self) -> None:
        self.tag = f"im{secrets.token_hex(2)}"
        rng = random.SystemRandom()
        self.subnet = f"10.{rng.randrange(100, 250)}.{rng.randrange(0, 256)}"
        self.bridge_ns = f"{self.tag}-br"
        self.gateway_veth = f"{self.tag}-h"  # in the caller's namespace
        self.hosts: dict[str, Host] = {}
        self._namespaces: list[str] = []
        self._cuts: set[tuple[str, str]] = set()

    @staticmethod
    def available() -> str | None:
        """None if network namespaces can be made here, else why not."""
        probe = f"improbe{secrets.token_hex(2)}"
        try:
            _ip("netns", "add", probe)
        except (MeshError, OSError) as exc:
            return f"`ip netns add` is not permitted here ({exc}); run as root"
        _ip("netns", "del", probe)
        return None

    @classmethod
    @contextmanager
    def create(cls) -> Iterator[Network]:
        net = cls()
        try:
            net._bridge()
            yield net
        finally:
            net.destroy()

    def _netns(self, name: str) -> None:
        _ip("netns", "add", name)
        self._namespaces.append(name)
        _ip("link", "set", "lo", "up", netns=name)

    def _bridge(self) -> None:
        self._netns(self.bridge_ns)
        _ip("link", "add", "br0", "type", "bridge", netns=self.bridge_ns)
        _ip("link", "set", "br0", "up", netns=self.bridge_ns)
        # the caller's end: the subnet's .1
        _ip("link", "add", self.gateway_veth, "type", "veth", "peer", "name", f"{self.tag}-hb")
        _ip("link", "set", f"{self.tag}-hb", "netns", self.bridge_ns)
        _ip("link", "set", f"{self.tag}-hb", "master", "br0", netns=self.bridge_ns)
        _ip("link", "set", f"{self.tag}-hb", "up", netns=self.bridge_ns)
        _ip("addr", "add", f"{self.subnet}.1/24", "dev", self.gateway_veth)
        _ip("link", "set", self.gateway_veth, "up")

    def add(self, name: str) -> Host:
        """A new host on the bridge at the subnet's next address."""
        index = len(self.hosts) + 2
        netns = f"{self.tag}-{name}"
        veth = f"{self.tag}-b{index}"
        self._netns(netns)
        _ip("link", "add", "eth0", "type", "veth", "peer", "name", veth, netns=netns)
        _ip("link", "set", veth, "netns", self.bridge_ns, netns=netns)
        _ip("link", "set", veth, "master", "br0", netns=self.bridge_ns)
        _ip("link", "set", veth, "up", netns=self.bridge_ns)
        ip = f"{self.subnet}.{index}"
        _ip("addr", "add", f"{ip}/24", "dev", "eth0", netns=netns)
        _ip("link", "set", "eth0", "up", netns=netns)
        host = Host(name, netns, ip, veth)
        self.hosts[name] = host
        return host

    # -- faults -----------------------------------------------------------------------------

    def partition(self, a: Host, b: Host) -> None:
        """Drop every packet between a and b, both ways, silently: each side's neighbour entry
        for the other names a hardware address nobody has, so what it sends is flooded by the
        bridge and taken by no one. Connections between them hang, as over a broken network
        (a connect times out, an established connection retransmits until TCP gives up),
        while both keep reaching every other host."""
        _ip(
            "neigh",
            "replace",
            b.ip,
            "lladdr",
            NOWHERE,
            "dev",
            "eth0",
            "nud",
            "permanent",
            netns=a.netns,
        )
        _ip(
            "neigh",
            "replace",
            a.ip,
            "lladdr",
            NOWHERE,
            "dev",
            "eth0",
            "nud",
            "permanent",
            netns=b.netns,
        )
        self._cuts.add((a.name, b.name))

    def heal(self, a: Host, b: Host) -> None:
        """Forget the false neighbour entries: the next packet asks for the real address."""
        _ip("neigh", "del", b.ip, "dev", "eth0", netns=a.netns)
        _ip("neigh", "del", a.ip, "dev", "eth0", netns=b.netns)
        self._cuts.discard((a.name, b.name))

    def link(self, host: Host, *, up: bool) -> None:
        """`ip link set down` (or up) of the host's link on the bridge: cut from every host."""
        _ip("link", "set", host.veth, "up" if up else "down", netns=self.bridge_ns)

    def netem(self, host: Host, *, delay_ms: int = 0, loss_percent: float = 0.0) -> None:
        """tc netem on the host's outgoing link: delay and loss of what it sends (0 and 0: off)."""
        if delay_ms == 0 and loss_percent == 0:
            subprocess.run(
                ["ip", "netns", "exec", host.netns, "tc", "qdisc", "del", "dev", "eth0", "root"],
                capture_output=True,
                timeout=30,
            )
            return
        done = subprocess.run(
            [
                *("ip", "netns", "exec", host.netns, "tc", "qdisc", "replace", "dev", "eth0"),
                *("root", "netem", "delay", f"{delay_ms}ms", "loss", f"{loss_percent}%"),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if done.returncode != 0:  # e.g. "Specified qdisc kind is unknown": no sch_netem
            raise MeshError(f"tc netem on {host.name}: {done.stderr.strip()}")

    def netem_available(self) -> str | None:
        """None if tc netem works on this kernel, else why not (some kernels lack sch_netem)."""
        if not self.hosts:
            raise MeshError("add a host first")
        host = next(iter(self.hosts.values()))
        try:
            self.netem(host, delay_ms=1)
        except MeshError as exc:
            return str(exc)
        self.netem(host)
        return None

    def heal_all(self) -> None:
        for a, b in sorted(self._cuts):
            self.heal(self.hosts[a], self.hosts[b])
        for host in self.hosts.values():
            self.link(host, up=True)
            self.netem(host)

    def destroy(self) -> None:
        """Delete every namespace (their links go with them) and the caller's veth."""
        subprocess.run(["ip", "link", "del", self.gateway_veth], capture_output=True, timeout=30)
        for name in reversed(self._namespaces):
            subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        self._namespaces.clear()
