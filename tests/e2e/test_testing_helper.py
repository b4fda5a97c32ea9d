"""coordd_client.testing: a user's own test suite gets a real daemon from the plugin."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

USER_CONFTEST = 'pytest_plugins = ("coordd_client.testing",)\n'
USER_TESTS = """
from coordd_client import Client


def test_two_workers_never_share_a_document(coordd_server, coordd_namespace):
    with Client.connect(coordd_server.address, agent_id="w1") as w1, Client.connect(
        coordd_server.address, agent_id="w2"
    ) as w2:
        assert w1.claims.acquire(coordd_namespace, "doc-1", ttl=30).acquired
        assert not w2.claims.acquire(coordd_namespace, "doc-1", ttl=30).acquired


def test_each_test_has_a_namespace_of_its_own(coordd_server, coordd_namespace):
    with Client.connect(coordd_server.address, agent_id="w3") as w3:
        assert w3.claims.acquire(coordd_namespace, "doc-1", ttl=30).acquired
"""


def test_the_plugin_serves_a_users_tests(
    pytester: pytest.Pytester, pg_dsn: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COORDD_TEST_DSN", pg_dsn)  # the session's PostgreSQL: no second one
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(REPO / "clients"), str(REPO)]))
    pytester.makeconftest(USER_CONFTEST)
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=2)


def test_the_server_reports_why_it_did_not_start() -> None:
    from coordd_client.testing import CoorddServer

    server = CoorddServer("postgresql://nobody@127.0.0.1:1/none", start_timeout=60)
    with pytest.raises(RuntimeError, match=r"coordd did not start:(.|\n)*cannot connect"):
        server.start()
