from datetime import timedelta

import pytest

from coordd.domain.validation import Checker, namespace_problem
from coordd.errors import InvalidArgumentError


@pytest.mark.parametrize("ns", ["a", "acme/research/task-42", "A.b_c:d-e", "/".join(["s"] * 8)])
def test_valid_namespaces(ns: str) -> None:
    assert namespace_problem(ns) is None


@pytest.mark.parametrize(
    ("ns", "why"),
    [
        ("", "required"),
        ("a//b", "segment"),
        ("a/b/", "segment"),
        ("has space", "segment"),
        ("/".join(["s"] * 9), "at most 8 segments"),
        ("x" * 65, "segment"),
        ("/".join(["x" * 60] * 5), "256 bytes"),
        ("ünïcode", "segment"),
    ],
)
def test_invalid_namespaces(ns: str, why: str) -> None:
    problem = namespace_problem(ns)
    assert problem is not None and why in problem


def test_checker_collects_every_violation_in_order() -> None:
    with pytest.raises(InvalidArgumentError) as exc, Checker() as c:
        c.namespace("namespace", "bad ns")
        c.name("resource", "", 10)
        c.name("key", "x" * 11, 10)
        c.name("id", "a\nb", 10)
        c.duration("ttl", timedelta(0), timedelta(seconds=1), timedelta(hours=1), required=True)
        c.duration("wait", None, timedelta(0), timedelta(1))
        c.positive("token", 0)
    fields = [v.field for v in exc.value.violations]
    assert fields == ["namespace", "resource", "key", "id", "ttl", "token"]
    assert "between 1s and 1h" in exc.value.violations[4].description


def test_checker_passes_clean_input() -> None:
    with Checker() as c:
        c.namespace("namespace", "acme/x")
        c.duration("ttl", timedelta(seconds=5), timedelta(seconds=1), timedelta(hours=1))
    assert c.violations == []
