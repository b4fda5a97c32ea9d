"""Memory write rules: what makes a write well-formed, wherever it comes from.

``PutMemory``/``PutMemories`` and an agreement's transition writes (applied with its COMMITTED
decision) are the same kind of write, so one function checks both; only where the fields sit
in the request (``prefix``) differs.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from coordd.domain import validation as v
from coordd.vocabulary import Tier, WriteMode

_CAS_OR_DEFAULT = (WriteMode.DEFAULT.number, WriteMode.COMPARE_AND_SET.number)


def check_tags(c: v.Checker, field: str, tags: Sequence[str]) -> None:
    """At most ``MAX_TAGS`` tags, each a name of at most ``TAG_MAX_BYTES``."""
    if len(tags) > v.MAX_TAGS:
        c.fail(field, f"must have at most {v.MAX_TAGS} tags")
    for i, tag in enumerate(tags):
        c.name(f"{field}[{i}]", tag, v.TAG_MAX_BYTES)


def check_write(
    c: v.Checker,
    prefix: str,
    *,
    namespace: str,
    key: str,
    tier: int,
    value_json: str,
    text: str,
    tags: Sequence[str],
    task_id: str,
    write_mode: int,
    expected_revision: int | None,
    ttl: timedelta | None,
) -> None:
    """Record on *c* every rule one memory write breaks (fields named ``prefix + name``).

    The write ordering rules: compare-and-set needs ``expected_revision`` (0 = must not exist)
    and only compare-and-set (or the namespace default) takes one; working memory belongs to a
    task.
    """
    c.namespace(prefix + "namespace", namespace)
    c.name(prefix + "key", key, v.MEMORY_KEY_MAX_BYTES)
    if not Tier.knows(tier):
        c.fail(prefix + "tier", "is required: WORKING, EPISODIC or SEMANTIC")
    c.json(prefix + "value_json", value_json)
    c.text(prefix + "text", text, v.MEMORY_TEXT_MAX_BYTES)
    check_tags(c, prefix + "tags", tags)
    c.text(prefix + "task_id", task_id, v.TASK_ID_MAX_BYTES)
    if tier == Tier.WORKING and not task_id:
        c.fail(prefix + "task_id", "is required for WORKING memory")
    if not WriteMode.knows(write_mode):
        c.fail(prefix + "write_mode", "is not a known write mode")
    elif expected_revision is not None and write_mode not in _CAS_OR_DEFAULT:
        c.fail(prefix + "expected_revision", "goes with COMPARE_AND_SET only")
    elif write_mode == WriteMode.COMPARE_AND_SET.number and expected_revision is None:
        c.fail(prefix + "expected_revision", "is required for COMPARE_AND_SET (0 = must not exist)")
    if expected_revision is not None and expected_revision < 0:
        c.fail(prefix + "expected_revision", "must be >= 0")
    c.duration(prefix + "ttl", ttl, v.MEMORY_TTL_MIN, v.MEMORY_TTL_MAX)
