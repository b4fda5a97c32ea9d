"""LangGraph namespace tuples <-> coordd namespaces.

A LangGraph namespace is a tuple of labels (non-empty strings without ``.``); a coordd namespace
is 1-8 segments of ``[A-Za-z0-9._:-]{1,64}`` joined by ``/``, at most 256 bytes. The store puts
a tuple under a root (default ``langgraph``), one segment per label::

    ("users", "Alice Smith", "prefs")  ->  "langgraph/users/Alice.20Smith/prefs"

Letters, digits, ``_``, ``:`` and ``-`` stay as they are; every other character becomes ``.``
and two hex digits per UTF-8 byte. LangGraph forbids ``.`` in labels, so the mapping is
one-to-one and decodes exactly. Limits, each raised as ``InvalidNamespaceError`` naming the
label: an encoded label is at most 64 bytes (a label of plain ASCII: 64 characters; each other
byte costs 3), the root plus the labels are at most 7 segments (the 8th holds the store's vector
entries, see ``VECTORS``), and the whole namespace is at most 256 bytes.
"""

from __future__ import annotations

import re

from langgraph.store.base import InvalidNamespaceError

SEGMENT_MAX_BYTES = 64
NAMESPACE_MAX_BYTES = 256
NAMESPACE_MAX_SEGMENTS = 8
VECTORS = ".v"
"""The child segment holding an item namespace's vector entries (never a decoded label)."""

_PLAIN = re.compile(r"[A-Za-z0-9_:-]")
_ESCAPE = re.compile(r"((?:\.[0-9A-F]{2})+)")
_SEGMENT = re.compile(r"[A-Za-z0-9._:-]{1,64}")


def encode_label(label: str) -> str:
    """One label as one coordd segment (see the module docstring)."""
    return "".join(
        ch if _PLAIN.fullmatch(ch) else "".join(f".{b:02X}" for b in ch.encode()) for ch in label
    )


def decode_label(segment: str) -> str:
    """The label a segment encodes. Raises ValueError if it is not an encoded label."""

    def unescape(m: re.Match[str]) -> str:
        hexes = m.group(1).split(".")[1:]
        return bytes(int(h, 16) for h in hexes).decode()

    if "." in _ESCAPE.sub("", segment):
        raise ValueError(f"{segment!r} is not an encoded label")
    return _ESCAPE.sub(unescape, segment)


def check_root(root: str) -> str:
    """Validate a root namespace (1-6 plain coordd segments)."""
    segments = root.split("/")
    if not all(_SEGMENT.fullmatch(s) for s in segments) or len(segments) > 6:
        raise ValueError(
            f"root {root!r} must be 1-6 segments of [A-Za-z0-9._:-]{{1,64}} joined by '/'"
        )
    return root


def to_coordd(root: str, labels: tuple[str, ...]) -> str:
    """The coordd namespace of a LangGraph namespace (or prefix; () is the root itself)."""
    segments = [root]
    for label in labels:
        if not isinstance(label, str) or not label or "." in label:
            raise InvalidNamespaceError(
                f"namespace label {label!r} in {labels}: labels must be non-empty strings"
                " without '.'"
            )
        segment = encode_label(label)
        if len(segment) > SEGMENT_MAX_BYTES:
            raise InvalidNamespaceError(
                f"namespace label {label[:40]!r} in {labels} is too long for coordd: encoded as"
                f" {len(segment)} bytes, the limit is {SEGMENT_MAX_BYTES} (characters other than"
                " letters, digits, '_', ':' and '-' take 3 bytes per UTF-8 byte)"
            )
        segments.append(segment)
    namespace = "/".join(segments)
    depth = len(namespace.split("/"))
    if depth > NAMESPACE_MAX_SEGMENTS - 1:
        raise InvalidNamespaceError(
            f"namespace {labels} is too deep for coordd under root {root!r}: at most"
            f" {NAMESPACE_MAX_SEGMENTS - 1 - len(root.split('/'))} labels"
        )
    if len(namespace.encode()) > NAMESPACE_MAX_BYTES - len(VECTORS) - 1:
        raise InvalidNamespaceError(
            f"namespace {labels} is too long for coordd: {len(namespace.encode())} bytes encoded"
            f" under root {root!r}, the limit is {NAMESPACE_MAX_BYTES - len(VECTORS) - 1}"
        )
    return namespace


def from_coordd(root: str, namespace: str) -> tuple[str, ...] | None:
    """The LangGraph namespace of a coordd namespace under *root*; None if it holds no items
    (vector entries, or namespaces that are not encoded labels)."""
    if not namespace.startswith(root + "/"):
        return None
    segments = namespace[len(root) + 1 :].split("/")
    if segments[-1] == VECTORS:
        return None
    try:
        return tuple(decode_label(s) for s in segments)
    except (ValueError, UnicodeDecodeError):
        return None


def vectors_of(namespace: str) -> str:
    """The namespace holding the vector entries of an item namespace."""
    return f"{namespace}/{VECTORS}"


def items_of(vector_namespace: str) -> str | None:
    """The item namespace a vector namespace belongs to (None if it is not one)."""
    head, _, tail = vector_namespace.rpartition("/")
    return head if tail == VECTORS else None
