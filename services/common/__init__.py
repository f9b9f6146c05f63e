"""What the three services share, written once: configuration, logging, phone numbers, caller
identity, the gRPC server bootstrap and interceptors, outbound channels, SQLite, backoff, time."""
