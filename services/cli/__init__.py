"""The `idmesh` command line and the local mesh launcher."""
