"""Domain rules: pure Python, no gRPC, no protobuf, no psycopg."""
