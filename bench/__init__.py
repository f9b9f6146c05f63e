"""idmesh benchmarks: `make bench` (or `python -m bench`) measures the real mesh against an echo
mesh of the same shape, in the same run, and reports each figure as a ratio to its baseline.

    bench.cli        the command line and the order of the run: a pass per engine
    bench.config     the run's sizes: smoke (tests), default (`make bench`), full (--full);
                     the engines (SQLite, PostgreSQL x1 and x2) and their sizes
    bench.load       closed-loop and open-loop load generators, latency statistics
    bench.procs      per-process RSS and CPU time from /proc, py-spy profiles
    bench.seed       direct seeding of the services' stores (their own MIGRATIONS): sqlite3,
                     or COPY on PostgreSQL
    bench.topology   the real mesh (services.localmesh), the echo mesh (bench.echo), the
                     embedded PostgreSQL server of a PostgreSQL pass
    bench.echo       echo services on the same stack (GrpcServer, open_channel) doing nothing
    bench.scenarios  a module per scenario (identification, VerifySubscriber, termination
                     fan-out, bulk import, memory, delivery policy), each declaring its targets;
                     the context they share, the level sweep they run, the stores' sizes
    bench.report     the table of targets (read through those declarations), the result JSON,
                     the text table, the markdown of docs/benchmarks.md, the plot, the docs
                     rewrite; the stores' bytes per row and rows per operation, and the
                     capacity model of docs/capacity.md
"""
