import dataclasses
import hashlib

import pytest

from coordd.domain.access import (
    Grant,
    Operation,
    Policy,
    TokenEntry,
    load_policy,
    pattern_matches,
)
from coordd.domain.models import Identity
from coordd.errors import PermissionDeniedError


@pytest.mark.parametrize(
    ("pattern", "ns", "ok"),
    [
        ("acme/**", "acme", True),
        ("acme/**", "acme/a/b/c", True),
        ("acme/*", "acme/a", True),
        ("acme/*", "acme/a/b", False),
        ("acme/*", "acme", False),
        ("acme/task-*", "acme/task-42", True),
        ("acme/task-*", "acme/job-42", False),
        ("**/shared", "x/y/shared", True),
        ("acme", "acmeX", False),
        ("**", "anything/at/all", True),
    ],
)
def test_pattern_matching_by_segment(pattern: str, ns: str, ok: bool) -> None:
    assert pattern_matches(pattern, ns) is ok


def test_policy_grants_by_role_or_agent() -> None:
    policy = Policy(
        grants=(
            Grant(("acme/**",), frozenset({Operation.READ}), role="reviewer"),
            Grant(("acme/private",), frozenset({Operation.WRITE}), agent_id="planner-1"),
        )
    )
    reviewer = Identity(agent_id="r1", role="reviewer")
    planner = Identity(agent_id="planner-1", role="planner")
    policy.check(reviewer, Operation.READ, "acme/x")
    policy.check(planner, Operation.WRITE, "acme/private")
    with pytest.raises(PermissionDeniedError):
        policy.check(reviewer, Operation.WRITE, "acme/x")
    with pytest.raises(PermissionDeniedError):
        policy.check(planner, Operation.READ, "acme/x")


def test_load_policy_and_token_lookup(tmp_path) -> None:
    digest = hashlib.sha256(b"tok").hexdigest()
    path = tmp_path / "p.toml"
    path.write_text(
        f'[[agents]]\nid = "a1"\nrole = "r"\ntoken_sha256 = "{digest}"\n'
        '[[grants]]\nrole = "r"\nnamespaces = ["x/**"]\noperations = ["read", "claim"]\n'
    )
    policy = load_policy(path)
    assert policy.identity_for_token("tok") == Identity(agent_id="a1", role="r")
    assert policy.identity_for_token("nope") is None
    policy.check(Identity(agent_id="a1", role="r"), Operation.CLAIM, "x/y")


def test_load_policy_reports_every_problem(tmp_path) -> None:
    path = tmp_path / "p.toml"
    path.write_text(
        '[[agents]]\nrole = "r"\n'
        '[[grants]]\nnamespaces = ["x"]\noperations = ["read"]\n'
        '[[grants]]\nrole = "r"\nnamespaces = ["x"]\noperations = ["fly"]\n'
    )
    with pytest.raises(ValueError) as exc:
        load_policy(path)
    text = str(exc.value)
    assert "agents[0]: missing id" in text and "grants[0]: needs role" in text
    assert "grants[1].operations" in text


def test_remembered_decisions_follow_a_policy_reload() -> None:
    """Decisions are kept per (agent, role, operation, namespace); a reload (adopt) must drop
    them: what was allowed is denied once the grant is gone, and the other way round."""
    reviewer = Identity(agent_id="r1", role="reviewer")
    reading = Policy(grants=(Grant(("acme/**",), frozenset({Operation.READ}), role="reviewer"),))
    nothing = Policy(grants=(Grant(("other/**",), frozenset({Operation.READ}), role="reviewer"),))
    policy = Policy(grants=reading.grants)
    policy.check(reviewer, Operation.READ, "acme/x")
    policy.check(reviewer, Operation.READ, "acme/x")  # now from what it remembers
    policy.adopt(nothing)
    with pytest.raises(PermissionDeniedError):
        policy.check(reviewer, Operation.READ, "acme/x")
    with pytest.raises(PermissionDeniedError):  # a remembered denial, too
        policy.check(reviewer, Operation.READ, "acme/x")
    policy.adopt(reading)
    policy.check(reviewer, Operation.READ, "acme/x")
    # Same namespace and operation, another caller: decided for that caller alone.
    with pytest.raises(PermissionDeniedError):
        policy.check(Identity(agent_id="r1", role="writer"), Operation.READ, "acme/x")


def test_remembered_decisions_are_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    from coordd.domain import access

    monkeypatch.setattr(access, "_DECISIONS_KEPT", 4)
    policy = Policy(grants=(Grant(("acme/*",), frozenset({Operation.READ}), role="reviewer"),))
    reviewer = Identity(agent_id="r1", role="reviewer")
    for i in range(10):
        policy.check(reviewer, Operation.READ, f"acme/{i}")
        with pytest.raises(PermissionDeniedError):
            policy.check(reviewer, Operation.READ, f"acme/{i}/deeper")
    assert len(policy._decisions) <= 4


def test_token_lookup_after_reload() -> None:
    def entry(agent: str, token: str) -> TokenEntry:
        return TokenEntry(agent, "r", hashlib.sha256(token.encode()).hexdigest())

    policy = Policy(tokens=(entry("a1", "tok-1"), entry("a2", "tok-2")))
    assert policy.identity_for_token("tok-2") == Identity(agent_id="a2", role="r")
    policy.adopt(Policy(tokens=(entry("a3", "tok-3"),)))
    assert policy.identity_for_token("tok-2") is None
    assert policy.identity_for_token("tok-3") == Identity(agent_id="a3", role="r")


def test_a_copied_policy_decides_for_itself() -> None:
    reviewer = Identity(agent_id="r1", role="reviewer")
    policy = Policy(grants=(Grant(("acme/**",), frozenset({Operation.READ}), role="reviewer"),))
    policy.check(reviewer, Operation.READ, "acme/x")
    copy = dataclasses.replace(policy, grants=())
    with pytest.raises(PermissionDeniedError):
        copy.check(reviewer, Operation.READ, "acme/x")
