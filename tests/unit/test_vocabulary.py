"""The vocabulary's tables match the protobuf enums, and bad labels name the valid choices."""

from __future__ import annotations

import pytest

from coordd import vocabulary as v
from coordd.v1 import agreement_service_pb2 as agreement_pb
from coordd.v1 import context_service_pb2 as context_pb
from coordd.v1 import idempotency_service_pb2 as idempotency_pb
from coordd.v1 import memory_service_pb2 as memory_pb

TABLES = [
    (v.Tier, memory_pb.MemoryTier, "MEMORY_TIER_"),
    (v.WriteMode, memory_pb.WriteMode, "WRITE_MODE_"),
    (v.Delivery, context_pb.Delivery, "DELIVERY_"),
    (v.IdempotencyState, idempotency_pb.IdempotencyState, "IDEMPOTENCY_STATE_"),
    (v.AgreementState, agreement_pb.AgreementState, "AGREEMENT_STATE_"),
    (v.DecisionCause, agreement_pb.DecisionCause, "DECISION_CAUSE_"),
    (v.TaskOutcome, memory_pb.TaskOutcome, "TASK_OUTCOME_"),
]


@pytest.mark.parametrize(("table", "proto", "prefix"), TABLES)
def test_every_term_has_its_proto_number(table, proto, prefix) -> None:
    wire = {name.removeprefix(prefix): number for name, number in proto.items()}
    for term in table:
        expected = 0 if term.label == "" else wire[term.name]
        assert term.number == expected, term
        assert table.of_number(term.number) is term
        assert table.parse(term.label, "f") is term
    assert {t.number for t in table} | {0} == set(wire.values())


@pytest.mark.parametrize(
    ("table", "bad", "field", "choices"),
    [
        (v.Tier, "longterm", "tier", "'working', 'episodic', 'semantic'"),
        (v.WriteMode, "overwrite", "mode", "'lww', 'cas', 'merge'"),
        (v.Delivery, "all", "delivery", "'each', 'any'"),
    ],
)
def test_a_bad_label_names_the_field_and_the_choices(table, bad, field, choices) -> None:
    with pytest.raises(ValueError) as err:
        table.parse(bad, field)
    assert str(err.value) == f"{field} must be one of {choices} (got {bad!r})"
