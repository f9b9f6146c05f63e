"""The gRPC entry points: the gateway's servicers and the delivery policy's RPCs."""
