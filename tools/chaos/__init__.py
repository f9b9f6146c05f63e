"""`make chaos`: a seeded fault run of the whole mesh, and a checker over what it recorded.

The mesh (two registries, the notifier, two gateways, a short verification window) runs as
real processes. Each round drives a seeded mixed load (identifications, confirmations,
terminations, port-outs, new contracts, number changes, at both messengers, with at least one
termination racing a confirmation) while a nemesis SIGKILLs and restarts services, restarts
them with a failpoint armed so that they die (or stall) inside a critical window, and
SIGSTOPs a registry (sometimes past the window) or the notifier. Every request and its outcome
is a JSON line in the run folder's history.jsonl. After each round the mesh is healed and
quiesced, and the checker (checker.py) compares the history with the final state read from
the public APIs and the stores. docs/chaos.md says what is checked.

Modules: schedule (the seeded plan of a round), client (the public gRPC APIs), history (the
record), workload (the scenarios), nemesis (the faults), state (reading the final state),
checker (the invariants), run (the rounds), __main__ (the command line).
"""
