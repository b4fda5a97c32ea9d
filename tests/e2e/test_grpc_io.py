"""``coordd serve`` picks gRPC's I/O engine before gRPC is imported (``COORDD_GRPC_IO``)."""

from __future__ import annotations

import re
import signal
import subprocess

import pytest

from coordd_client import Client
from tests.fix_daemon import serve_process


def _serve_until_serving(pg_dsn: str, env: dict[str, str]) -> tuple[subprocess.Popen[str], str]:
    proc = serve_process(
        "--dsn", pg_dsn, "--listen", "127.0.0.1:0", "--log-level", "debug", env=env
    )
    assert proc.stderr is not None
    log: list[str] = []
    for line in proc.stderr:
        log.append(line)
        if "coordd serving on" in line:
            return proc, "".join(log)
    proc.kill()
    raise AssertionError("daemon did not start:\n" + "".join(log))


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.send_signal(signal.SIGTERM)
    assert proc.stderr is not None
    proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(60) == 0


@pytest.mark.parametrize(
    ("env", "engine"),
    [
        ({}, "gRPC I/O: poller"),
        ({"COORDD_GRPC_IO": "eventengine"}, "gRPC I/O: eventengine"),
        ({"GRPC_EXPERIMENTS": "-event_engine_client"}, "set by the environment"),
    ],
    ids=["default", "eventengine", "operator's GRPC_EXPERIMENTS"],
)
def test_the_engine_is_chosen_before_grpc_and_serves(
    pg_dsn: str, env: dict[str, str], engine: str
) -> None:
    proc, log = _serve_until_serving(pg_dsn, env)
    try:
        assert engine in log, log
        address = re.search(r"coordd serving on (\S+)", log)
        assert address is not None
        with Client.connect(address.group(1), agent_id="agent-io") as client:
            got = client.claims.acquire("io/ns", "r1", ttl=30)
            assert got.acquired and got.claim is not None
            client.claims.release("io/ns", "r1", got.claim.fencing_token)
    finally:
        _stop(proc)


def test_an_unknown_engine_is_refused_with_the_choices() -> None:
    proc = serve_process(env={"COORDD_GRPC_IO": "threads"})
    assert proc.stderr is not None
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.wait(60) == 2
    assert "COORDD_GRPC_IO='threads': choose one of poller, eventengine" in err


def test_the_environment_a_child_needs_for_each_choice() -> None:
    from coordd.commands._server import POLLER_EXPERIMENTS, grpc_io_environment

    assert grpc_io_environment({}) == {"GRPC_EXPERIMENTS": POLLER_EXPERIMENTS}
    assert grpc_io_environment({"COORDD_GRPC_IO": "Poller "}) == {
        "GRPC_EXPERIMENTS": POLLER_EXPERIMENTS
    }
    assert grpc_io_environment({"COORDD_GRPC_IO": "eventengine"}) == {}
    assert grpc_io_environment({"GRPC_EXPERIMENTS": "-event_engine_client"}) == {}
    with pytest.raises(ValueError, match="choose one of poller, eventengine"):
        grpc_io_environment({"COORDD_GRPC_IO": "threads"})
