"""One vocabulary: coordd's enum tables and shared value types, defined once for the client,
the daemon and SQL.

Every term has a ``label`` (what clients pass and read, and what SQL stores: ``"semantic"``,
``"cas"``, ``"any"``) and a ``number`` (its value in the ``coordd.v1`` protobuf enum, which
follows the order of definition; ``tests/unit/test_vocabulary.py`` checks every table against
the generated code). Converters on
both sides look terms up here; a label that is not a term raises ``ValueError`` naming the
valid choices.

Import-light on purpose (the standard library only): the domain, the client and the base
install all import it.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Self

__all__ = [
    "Acknowledgement",
    "AgreementState",
    "Claim",
    "DecisionCause",
    "Delivery",
    "EntryRef",
    "Fence",
    "IdempotencyRecord",
    "IdempotencyState",
    "NamespacePolicy",
    "Participant",
    "TaskOutcome",
    "Tier",
    "WriteMode",
]


_NUMBERED: dict[type, dict[int, Any]] = {}
_TERM_NUMBERS: dict[type, dict[Any, int]] = {}


class _Lookup:
    """What every vocabulary table offers (mixed into its enum)."""

    label: str
    number: int

    @classmethod
    def parse(cls, value: str | None, field: str) -> Self:
        """The term labelled *value*; ``ValueError`` naming *field* and the choices if none."""
        for term in cls:  # type: ignore[attr-defined]
            if term.label == value or term is value:
                return term  # type: ignore[no-any-return]
        choices = ", ".join(repr(t.label) for t in cls if t.label)  # type: ignore[attr-defined]
        raise ValueError(f"{field} must be one of {choices} (got {value!r})")

    @classmethod
    def of_number(cls, number: int, default: Any = None) -> Self:
        """The term whose wire number is *number*, else *default* (``ValueError`` if None)."""
        term = cls._numbered().get(number)
        if term is not None:
            return term
        if default is None:
            raise ValueError(f"{cls.__name__} has no term numbered {number}")
        return default  # type: ignore[no-any-return]

    @classmethod
    def knows(cls, number: int) -> bool:
        """Whether some term is numbered *number* (protobuf lets any int through)."""
        return number in cls._numbered()

    @classmethod
    def label_of(cls, number: int, default: str = "") -> str:
        """The label of the term numbered *number*, else *default*."""
        term = cls._numbered().get(number)
        return str(term.label) if term is not None else default

    @classmethod
    def _numbered(cls) -> dict[int, Self]:
        """Terms by wire number, built once per table (these run on every request)."""
        table = _NUMBERED.get(cls)
        if table is None:
            table = _NUMBERED[cls] = {t.number: t for t in cls}  # type: ignore[attr-defined]
        return table


class _Term(_Lookup, enum.StrEnum):
    """A term whose value is its label. Wire numbers follow the order of definition, as in
    the proto enum: the term labelled "" is 0 (``*_UNSPECIFIED``), the others count from 1."""

    @property
    def label(self) -> str:  # type: ignore[override]
        return str(self.value)

    @property
    def number(self) -> int:  # type: ignore[override]
        numbers = _TERM_NUMBERS.get(type(self))
        if numbers is None:
            terms = list(type(self))
            first = 0 if terms[0].value == "" else 1
            numbers = _TERM_NUMBERS[type(self)] = {t: i + first for i, t in enumerate(terms)}
        return numbers[self]


class Tier(_Lookup, enum.IntEnum):
    """A memory tier. Its value is the wire number, which SQL stores too."""

    WORKING = 1
    EPISODIC = 2
    SEMANTIC = 3

    @property
    def label(self) -> str:  # type: ignore[override]
        return self.name.lower()

    @property
    def number(self) -> int:  # type: ignore[override]
        return int(self.value)


class WriteMode(_Term):
    """How a memory write orders against others; DEFAULT is the namespace policy's."""

    DEFAULT = ""
    LAST_WRITE_WINS = "lww"
    COMPARE_AND_SET = "cas"
    MERGE_PATCH = "merge"


class Delivery(_Term):
    """Context delivery: EACH agent of the role, or ANY one of them under a lease."""

    EACH = "each"
    ANY = "any"


class IdempotencyState(_Term):
    """Where an idempotency key stands (the outcome of a Begin)."""

    ACQUIRED = "acquired"
    COMPLETED = "completed"
    IN_PROGRESS = "in_progress"
    FAILED = "failed"


class AgreementState(_Term):
    """An agreement is PENDING until decided COMMITTED or ABORTED, once, for everyone."""

    PENDING = "pending"
    COMMITTED = "committed"
    ABORTED = "aborted"


class DecisionCause(_Term):
    """Why an agreement was decided (NONE while pending)."""

    NONE = ""
    ALL_ACCEPTED = "all_accepted"
    REJECTED = "rejected"
    DEADLINE_PASSED = "deadline_passed"
    WITHDRAWN = "withdrawn"
    TRANSITION_FAILED = "transition_failed"


class TaskOutcome(_Term):
    """How a task ended (EXPIRED is the sweeper's, when its lease lapsed)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


# Value types the client returns and the daemon passes between its layers: one definition each.


@dataclass(frozen=True, slots=True, kw_only=True)
class Fence:
    """A claim token to attach to a write: the write applies only while the claim is yours."""

    namespace: str
    resource: str
    token: int


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A live claim."""

    namespace: str
    resource: str
    holder_agent_id: str
    holder_role: str
    fencing_token: int
    acquire_time: datetime
    expire_time: datetime
    progress: str = ""

    @property
    def fence(self) -> Fence:
        """The fence for writes made under this claim."""
        return Fence(namespace=self.namespace, resource=self.resource, token=self.fencing_token)


@dataclass(frozen=True, slots=True, kw_only=True)
class IdempotencyRecord:
    """An idempotency key's record (times are None where the record has none)."""

    namespace: str
    key: str
    state: IdempotencyState
    attempt: int
    fingerprint: bytes
    result: bytes
    error: str
    runner_agent_id: str
    create_time: datetime | None
    lease_expire_time: datetime | None
    expire_time: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Acknowledgement:
    """A receipt of a context entry: who acknowledged it, and when."""

    agent_id: str
    role: str
    ack_time: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class EntryRef:
    """A reference to (a version of) a memory entry; revision 0 = the current one."""

    namespace: str
    key: str
    revision: int = 0


@dataclass(frozen=True, slots=True, kw_only=True)
class Participant:
    """Who must accept an agreement: one agent (``agent_id``), or ``count`` distinct agents
    of ``role``.

    Each voter takes one seat with its first vote: the seat naming its agent id, else a free
    seat of its role. An agent with no seat to take is not a participant.
    """

    agent_id: str = ""
    role: str = ""
    count: int = 1


@dataclass(frozen=True, slots=True, kw_only=True)
class NamespacePolicy:
    """How a namespace's memory writes order by default, and how long episodes are kept.

    Attributes:
        default_mode: The write mode of writes that name none ("lww", "cas" or "merge").
        forbid_unconditional: Refuse last-write-wins writes (only CAS and merge).
        episodic_max_age: Episodes older than this are removed (None: kept).
        episodic_max_count: Keep at most this many episodes (0: no limit).
    """

    default_mode: str = "lww"
    forbid_unconditional: bool = False
    episodic_max_age: timedelta | None = None
    episodic_max_count: int = 0
