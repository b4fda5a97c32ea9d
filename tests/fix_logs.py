"""Test logs: INFO shown for a failing test (pytest's ``log_level``), its last DEBUG lines kept.

At DEBUG for every test a failure printed about 39,000 lines. pytest now captures at INFO; this
plugin keeps each test's DEBUG records in a ring of the last ``DEBUG_TAIL`` and adds them to the
report only when that test fails, so the detail just before a failure is still there.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Generator

import pytest

DEBUG_TAIL = 300
# Loggers whose DEBUG lines say nothing about coordd (grpc logs every loop it looks up).
QUIET = ("grpc._cython", "asyncio")


class DebugTail(logging.Handler):
    """Keeps the latest DEBUG records (formatted only if a test fails)."""

    def __init__(self, size: int) -> None:
        super().__init__(logging.DEBUG)
        self.records: collections.deque[logging.LogRecord] = collections.deque(maxlen=size)
        self.dropped = 0
        self.setFormatter(
            logging.Formatter(
                "%(asctime)s.%(msecs)03d %(levelname)-5s %(threadName)s %(name)s: %(message)s",
                "%H:%M:%S",
            )
        )

    def emit(self, record: logging.LogRecord) -> None:
        # INFO and above are in pytest's own capture.
        if record.levelno < logging.INFO and not record.name.startswith(QUIET):
            if len(self.records) == self.records.maxlen:
                self.dropped += 1
            self.records.append(record)

    def clear(self) -> None:
        self.records.clear()
        self.dropped = 0

    def text(self) -> str:
        lines = []
        for record in list(self.records):
            try:
                lines.append(self.format(record))
            except Exception as exc:  # a record whose arguments no longer format
                lines.append(f"<unformattable {record.name} record: {exc!r}>")
        head = f"({self.dropped} earlier DEBUG records dropped)\n" if self.dropped else ""
        return head + "\n".join(lines)


_tail = DebugTail(DEBUG_TAIL)


def pytest_configure(config: pytest.Config) -> None:
    # pytest's capture sets the root level to min(current, log_level): DEBUG here keeps DEBUG
    # records flowing to the tail while pytest's handler still shows INFO and above.
    root = logging.getLogger()
    root.setLevel(logging.DEBUG)
    root.addHandler(_tail)


def pytest_unconfigure(config: pytest.Config) -> None:
    logging.getLogger().removeHandler(_tail)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_logstart(nodeid: str, location: tuple[str, int | None, str]) -> None:
    _tail.clear()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.failed and _tail.records:
        report.sections.append(
            (f"Captured DEBUG log {report.when} (last {DEBUG_TAIL} records)", _tail.text())
        )
        _tail.clear()
    return report
