"""A bad enum string in the client is a ValueError naming the valid choices, before any call."""

from __future__ import annotations

import pytest

from coordd_client import Client, TransitionWrite


def test_bad_labels_name_the_valid_choices(client: Client) -> None:
    with pytest.raises(ValueError, match=r"tier must be one of 'working', 'episodic', 'semantic'"):
        client.memory.put("acme/kb", "k", 1, tier="longterm")
    with pytest.raises(ValueError, match=r"mode must be one of 'lww', 'cas', 'merge' .*overwrite"):
        client.memory.put("acme/kb", "k", 1, mode="overwrite")
    with pytest.raises(ValueError, match=r"delivery must be one of 'each', 'any' \(got 'all'\)"):
        client.context.post("acme/run", {}, to_role="r", context_type="t", delivery="all")
    with pytest.raises(ValueError, match=r"tier must be one of"):
        client.agreements.propose(
            "acme/run",
            "a1",
            participants=["agent-s"],
            deadline=5,
            writes=[TransitionWrite(namespace="acme/kb", key="k", value=1, tier="forever")],
        )
    assert client.memory.get("acme/kb", "k") is None  # nothing was written
