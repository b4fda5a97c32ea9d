"""coordd: the coordination layer for multi-agent systems.

This package stays import-light: clients import ``coordd.v1`` (generated protocol) and
``coordd.errors`` without pulling in psycopg or hnswlib.
"""

__version__ = "0.1.0"
