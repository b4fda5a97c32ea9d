"""Clocks. Leases use the database's clock; this one only paces waits inside the daemon."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float:
        """Seconds from an arbitrary origin, never going backwards."""
        ...


class SystemClock:
    def monotonic(self) -> float:
        return time.monotonic()
