"""What the injector puts into every pod: one frozen config, from flags and environment.

The webhook and ``coordd inject`` build it the same way, so the same flags and variables give
byte-for-byte the same pods online and offline.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from coordd import __version__
from coordd.inject import annotations as ann

DEFAULT_UPSTREAM = "coordd.coordd.svc.cluster.local:7420"
DEFAULT_SIDECAR_IMAGE = f"coordd-sidecar:{__version__}"


@dataclass(frozen=True, slots=True, kw_only=True)
class InjectConfig:
    """The injector's settings. Field docs name the flag and the variable."""

    sidecar_image: str = DEFAULT_SIDECAR_IMAGE
    """--sidecar-image / COORDD_SIDECAR_IMAGE: the sidecar's container image."""
    upstream: str = DEFAULT_UPSTREAM
    """--upstream / COORDD_UPSTREAM: host:port of the daemon's Service, as sidecars dial it."""
    default_cpu: str = "100m"
    """--sidecar-cpu / COORDD_SIDECAR_CPU: CPU request unless ``coordd.io/sidecar-cpu``."""
    default_memory: str = "128Mi"
    """--sidecar-memory / COORDD_SIDECAR_MEMORY: memory request and limit unless
    ``coordd.io/sidecar-memory``."""
    otel: tuple[tuple[str, str], ...] = ()
    """The injector's own ``OTEL_*`` variables, passed on to sidecars and agent containers
    (for example ``OTEL_EXPORTER_OTLP_ENDPOINT`` of the cluster's collector)."""

    @classmethod
    def from_env(cls, environ: Mapping[str, str], **overrides: Any) -> InjectConfig:
        """Build from the environment, then apply non-None *overrides* (flags)."""
        values: dict[str, Any] = {}
        for name, var in (
            ("sidecar_image", "COORDD_SIDECAR_IMAGE"),
            ("upstream", "COORDD_UPSTREAM"),
            ("default_cpu", "COORDD_SIDECAR_CPU"),
            ("default_memory", "COORDD_SIDECAR_MEMORY"),
        ):
            if environ.get(var):
                values[name] = environ[var]
        values["otel"] = tuple(sorted((k, v) for k, v in environ.items() if k.startswith("OTEL_")))
        values.update({k: v for k, v in overrides.items() if v is not None})
        config = cls(**values)
        config.validate()
        return config

    def validate(self) -> None:
        """Check the settings once, at start.

        Raises:
            ValueError: every problem found, together.
        """
        problems = []
        host, _, port = self.upstream.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            problems.append(f"upstream {self.upstream!r} must be host:port")
        if not self.sidecar_image or any(c.isspace() for c in self.sidecar_image):
            problems.append(f"sidecar image {self.sidecar_image!r} is not an image reference")
        if problem := ann.cpu_problem(self.default_cpu):
            problems.append("sidecar cpu " + problem)
        if problem := ann.memory_problem(self.default_memory):
            problems.append("sidecar memory " + problem)
        if problems:
            raise ValueError("; ".join(problems))
