"""How each service reads its requests: one module per service, one function per RPC, named like
the RPC in snake case (``requests.put_memory(req)`` for ``PutMemory``).

A function takes the protobuf request, checks every field (all violations at once, as one
INVALID_ARGUMENT with field violations; coordd/domain/validation.py), and returns the values
the domain service takes: a servicer reads ``authorize -> requests.<rpc>(req) -> domain ->
response``, and a request is never read twice in two ways.
"""
