"""``with x:`` that closes *x* on exit, for the client's objects that own a connection."""

from __future__ import annotations

from types import TracebackType
from typing import Self


class Closing:
    """A resource that a ``with`` block closes on exit by calling its ``close()``."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, t: type[BaseException] | None, e: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()
