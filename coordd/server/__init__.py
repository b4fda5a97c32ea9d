"""gRPC transport: servicers, interceptors and the server lifecycle."""
