"""One set of memory write rules for PutMemory and agreement transition writes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from coordd.domain import validation as v
from coordd.domain.memory_writes import check_write
from coordd.errors import InvalidArgumentError
from coordd.vocabulary import Tier, WriteMode

GOOD = dict(
    namespace="acme/kb",
    key="k",
    tier=Tier.SEMANTIC.number,
    value_json="{}",
    text="",
    tags=["a"],
    task_id="",
    write_mode=WriteMode.DEFAULT.number,
    expected_revision=None,
    ttl=None,
)


def fields(prefix: str, **changes: object) -> list[str]:
    with pytest.raises(InvalidArgumentError) as err, v.checking() as c:
        check_write(c, prefix, **{**GOOD, **changes})  # type: ignore[arg-type]
    return [x.field for x in err.value.violations]


@pytest.mark.parametrize("prefix", ["", "writes[2]."])
def test_the_same_rules_name_the_same_fields_under_either_prefix(prefix: str) -> None:
    assert fields(prefix, tier=0) == [prefix + "tier"]
    assert fields(prefix, tier=Tier.WORKING.number) == [prefix + "task_id"]
    assert fields(prefix, write_mode=WriteMode.COMPARE_AND_SET.number) == [
        prefix + "expected_revision"
    ]
    assert fields(prefix, write_mode=WriteMode.MERGE_PATCH.number, expected_revision=3) == [
        prefix + "expected_revision"
    ]
    assert fields(prefix, write_mode=9, ttl=timedelta(0)) == [
        prefix + "write_mode",
        prefix + "ttl",
    ]


def test_a_good_write_passes() -> None:
    with v.checking() as c:
        check_write(c, "", **GOOD)  # type: ignore[arg-type]
