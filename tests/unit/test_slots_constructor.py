"""slots_constructor: the hot paths' ContextEntry builder gives what __init__ gives."""

from __future__ import annotations

import dataclasses
import pickle
from datetime import UTC, datetime
from typing import Any

import pytest

from coordd.domain import models as domain_models
from coordd_client import _models as client_models
from coordd_client._construct import slots_constructor

T0 = datetime(2030, 1, 1, tzinfo=UTC)
SHARED: dict[str, Any] = {
    "namespace": "ns",
    "id": 7,
    "from_agent_id": "a1",
    "from_role": "writer",
    "to_role": "reviewer",
    "to_agent_id": "",
    "context_type": "note",
    "task_id": "t1",
    "correlation_id": "c1",
    "delivery": "any",
    "sender_vector": {"ns": 6},
    "create_time": T0,
    "expire_time": T0,
}
DOMAIN = {**SHARED, "content_json": '{"n": 1}', "acks": []}
CLIENT = {
    **SHARED,
    "content": {"n": 1},
    "acks": [client_models.Acknowledgement(agent_id="r1", role="reviewer", ack_time=T0)],
}


@pytest.mark.parametrize(
    ("cls", "fields"),
    [(domain_models.ContextEntry, DOMAIN), (client_models.ContextEntry, CLIENT)],
    ids=["daemon", "client"],
)
def test_builds_what_init_builds(cls: Any, fields: dict[str, Any]) -> None:
    built = slots_constructor(cls)(**fields)
    expected = cls(**fields)
    assert type(built) is cls
    assert built == expected
    assert repr(built) == repr(expected)
    assert dataclasses.asdict(built) == dataclasses.asdict(expected)
    assert pickle.loads(pickle.dumps(built)) == expected
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.id = 8


def test_every_field_is_required_by_name() -> None:
    build = slots_constructor(client_models.ContextEntry)
    missing = {k: v for k, v in CLIENT.items() if k != "expire_time"}
    with pytest.raises(TypeError, match="expire_time"):
        build(**missing)
    with pytest.raises(TypeError, match="colour"):
        build(**CLIENT, colour="red")
    with pytest.raises(TypeError):
        build(*CLIENT.values())


def test_refuses_what_it_would_build_wrongly() -> None:
    @dataclasses.dataclass(frozen=True)
    class WithDict:
        x: int

    @dataclasses.dataclass(slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            if self.x < 0:
                raise ValueError("x")

    class Plain:
        pass

    with pytest.raises(TypeError, match="slotted"):
        slots_constructor(WithDict)
    with pytest.raises(TypeError, match="__post_init__"):
        slots_constructor(Checked)
    with pytest.raises(TypeError, match="not a dataclass"):
        slots_constructor(Plain)
