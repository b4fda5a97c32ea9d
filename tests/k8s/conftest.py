"""Kubernetes tests need no database: replace the suite's autouse database fixture here."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def clean_db() -> None:
    """Manifests, the webhook and ``coordd inject`` touch no PostgreSQL."""
