"""The embedded default: a private PostgreSQL started through the pgserver package."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path
from typing import Any

from coordd.errors import StorageUnavailableError

logger = logging.getLogger(__name__)


class EmbeddedPostgres:
    """A PostgreSQL server in *data_dir*, started on :meth:`start`, stopped on :meth:`stop`.

    The data directory survives restarts; starting on an existing one reuses its data.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._server: Any = None

    def start(self) -> str:
        """Start (or attach to) the server and return its connection URI."""
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            with warnings.catch_warnings():
                # pgserver asks platformdirs for a runtime dir that containers often lack.
                warnings.simplefilter("ignore")
                from pgserver import get_server  # type: ignore[attr-defined]

                self._server = get_server(self.data_dir, cleanup_mode="stop")
        except Exception as exc:
            raise StorageUnavailableError(
                f"cannot start the embedded PostgreSQL in {self.data_dir}: {exc}"
            ) from exc
        uri: str = self._server.get_uri()
        logger.info("embedded PostgreSQL running in %s", self.data_dir)
        return uri

    def stop(self) -> None:
        if self._server is not None:
            self._server.cleanup()
            self._server = None
