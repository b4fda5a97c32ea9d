"""Generated protobuf and gRPC code for coordd.v1 (scripts/gen_protos.py)."""
