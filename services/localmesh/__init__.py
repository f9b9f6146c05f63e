"""idmesh's local mesh as a library: start the whole mesh (two operators' registries, the
notifier, the messengers' gateways) as real processes on free ports, with a development PKI,
on SQLite or PostgreSQL, with replicas; stop, kill and restart its processes; talk to it with
typed clients that carry each caller's mutual-TLS identity; read the codes users were sent.

    from services.localmesh import Mesh, MeshClient, demo_spec

    mesh = Mesh(demo_spec(base_port=None), data_dir)   # or your own MeshSpec
    mesh.start()
    async with mesh_client(mesh) as client:
        ident = await client.identify("alpha", "user-1", "+79031234567")
    mesh.stop()

The pytest plugin (services.localmesh.pytest_plugin, registered by the package's `pytest11`
entry point) gives the same as fixtures. What this module exports is the public API; the
submodules' other names are internal. docs/testing.md shows it in use.
"""

from services.localmesh.blackhole import Blackhole
from services.localmesh.client import MeshClient, log_lines_with, mesh_client
from services.localmesh.eventually import eventually, eventually_sync
from services.localmesh.mesh import Mesh, load_layout
from services.localmesh.postgres import EmbeddedPostgres
from services.localmesh.process import ServiceProcess, wait_serving
from services.localmesh.sms import latest_code, read_outbox
from services.localmesh.spec import (
    MeshError,
    MeshSpec,
    MessengerSpec,
    OperatorSpec,
    PostgresSpec,
    demo_spec,
)

__all__ = [
    "Blackhole",
    "EmbeddedPostgres",
    "Mesh",
    "MeshClient",
    "MeshError",
    "MeshSpec",
    "MessengerSpec",
    "OperatorSpec",
    "PostgresSpec",
    "ServiceProcess",
    "demo_spec",
    "eventually",
    "eventually_sync",
    "latest_code",
    "load_layout",
    "log_lines_with",
    "mesh_client",
    "read_outbox",
    "wait_serving",
]
