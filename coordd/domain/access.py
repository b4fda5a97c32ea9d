"""Access policy: grants of operations on namespace patterns to roles or agents (§7)."""

from __future__ import annotations

import enum
import fnmatch
import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from coordd.domain.limits import RoleLimits
from coordd.domain.models import Identity
from coordd.errors import PermissionDeniedError

_DECISIONS_KEPT = 8192

# One namespace segment (validation.py's rule): what a {agent} or {role} placeholder may become.
_SEGMENT = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class Operation(enum.StrEnum):
    READ = "read"
    WRITE = "write"
    CLAIM = "claim"
    ADMIN = "admin"


@dataclass(frozen=True, slots=True)
class Grant:
    """Allows *operations* on namespaces matching any of *patterns* to a role or an agent.

    Patterns match whole segments: ``*`` is one segment, ``**`` any number (including none),
    other segments may use ``fnmatch`` wildcards (``task-*``).
    """

    patterns: tuple[str, ...]
    operations: frozenset[Operation]
    role: str = ""
    agent_id: str = ""

    def applies_to(self, who: Identity) -> bool:
        return (self.role != "" and self.role == who.role) or (
            self.agent_id != "" and self.agent_id == who.agent_id
        )

    def allows(self, who: Identity, op: Operation, namespace: str) -> bool:
        return (
            self.applies_to(who)
            and op in self.operations
            and any(pattern_matches(p, namespace) for p in self.patterns_for(who))
        )

    def patterns_for(self, who: Identity) -> list[str]:
        """The patterns with ``{agent}`` and ``{role}`` filled in for *who*.

        A placeholder stands for exactly one namespace segment: an agent id or role that is not
        a valid segment (empty, or holding ``/``) makes its patterns match nothing, so
        ``agents/{agent}/**`` can never reach into another agent's space.
        """
        out = []
        for p in self.patterns:
            if "{" not in p:
                out.append(p)
                continue
            values = {"{agent}": who.agent_id, "{role}": who.role}
            if any(k in p and not _SEGMENT.fullmatch(v) for k, v in values.items()):
                continue
            for k, v in values.items():
                p = p.replace(k, v)
            out.append(p)
        return out


def pattern_matches(pattern: str, namespace: str) -> bool:
    """Match a namespace against a segment pattern (``acme/*/tasks``, ``acme/**``)."""
    return _match(pattern.split("/"), namespace.split("/"))


def _match(pat: list[str], segs: list[str]) -> bool:
    if not pat:
        return not segs
    head = pat[0]
    if head == "**":
        return any(_match(pat[1:], segs[i:]) for i in range(len(segs) + 1))
    return bool(segs) and fnmatch.fnmatchcase(segs[0], head) and _match(pat[1:], segs[1:])


QUOTA_KINDS = ("memory", "context", "idempotency")


@dataclass(frozen=True, slots=True)
class Quota:
    """Limits of one kind of data in one namespace (0: none)."""

    namespace: str
    kind: str
    max_entries: int = 0
    max_bytes: int = 0


@dataclass(frozen=True, slots=True)
class TokenEntry:
    agent_id: str
    role: str
    token_sha256: str


@dataclass(frozen=True, slots=True)
class Policy:
    """Who may do what. ``open_access`` (dev mode without a policy file) allows everything."""

    grants: tuple[Grant, ...] = ()
    tokens: tuple[TokenEntry, ...] = ()
    open_access: bool = False
    limits: tuple[RoleLimits, ...] = ()
    quotas: tuple[Quota, ...] = ()
    _by_hash: dict[str, TokenEntry] = field(default_factory=dict, compare=False, repr=False)
    # Decisions already taken, by (agent id, role, operation, namespace): a check runs on every
    # call and matching every grant's patterns costs ~10 us with ten grants; an agent works in
    # few namespaces. Bounded (cleared when full) and cleared when the grants change (adopt).
    _decisions: dict[tuple[str, str, Operation, str], bool] = field(
        default_factory=dict, init=False, compare=False, repr=False
    )

    def __post_init__(self) -> None:
        self._by_hash.update({t.token_sha256: t for t in self.tokens if t.token_sha256})

    def check(self, who: Identity, op: Operation, namespace: str) -> None:
        """Raise PermissionDeniedError unless a grant allows *op* on *namespace*."""
        if self.open_access:
            return
        key = (who.agent_id, who.role, op, namespace)
        allowed = self._decisions.get(key)
        if allowed is None:
            allowed = any(g.allows(who, op, namespace) for g in self.grants)
            if len(self._decisions) >= _DECISIONS_KEPT:
                self._decisions.clear()
            self._decisions[key] = allowed
        if not allowed:
            raise PermissionDeniedError(op.value, namespace)

    def check_subtree(self, who: Identity, op: Operation, namespace: str) -> None:
        """Raise unless one grant allows *op* on *namespace* and everything below it."""
        if self.open_access:
            return
        for g in self.grants:
            if g.applies_to(who) and op in g.operations:
                for p in g.patterns_for(who):
                    if p.endswith("**") and all(
                        pattern_matches(p, ns)
                        for ns in (namespace, f"{namespace}/x", f"{namespace}/x/y/z")
                    ):
                        return
        raise PermissionDeniedError(op.value, namespace + "/**")

    def adopt(self, other: Policy) -> None:
        """Take *other*'s grants and tokens in place (SIGHUP reload): every holder of this
        object sees the new policy from its next check, without restarting anything."""
        self._by_hash.clear()
        self._by_hash.update(other._by_hash)
        self._decisions.clear()
        object.__setattr__(self, "grants", other.grants)
        object.__setattr__(self, "tokens", other.tokens)
        object.__setattr__(self, "open_access", other.open_access)
        object.__setattr__(self, "limits", other.limits)
        object.__setattr__(self, "quotas", other.quotas)

    def role_of(self, agent_id: str) -> str:
        """The role the policy's [[agents]] entry gives *agent_id* ("" if none)."""
        return next((t.role for t in self.tokens if t.agent_id == agent_id), "")

    def identity_for_token(self, token: str) -> Identity | None:
        """The identity a bearer token maps to; only token hashes are stored."""
        # Looked up by the token's SHA-256, not compared against every stored hash in turn:
        # what a lookup's timing could reveal is about the digest, which an attacker cannot
        # steer without a preimage, and the cost no longer grows with the number of agents.
        entry = self._by_hash.get(hashlib.sha256(token.encode()).hexdigest())
        if entry is None:
            return None
        return Identity(agent_id=entry.agent_id, role=entry.role)


OPEN_POLICY = Policy(open_access=True)


def load_policy(path: Path) -> Policy:
    """Read a TOML policy file::

    [[agents]]                 # token mode: who each token is
    id = "planner-1"
    role = "planner"
    token_sha256 = "<hex sha-256 of the bearer token>"

    [[grants]]
    role = "planner"           # or agent = "planner-1"
    namespaces = ["acme/**", "agents/{agent}/**"]   # {agent}, {role}: the caller's, one segment
    operations = ["read", "write", "claim"]

    [[limits]]                 # per agent, by role ("*": any other role); see domain.limits
    role = "planner"
    rate = 50                  # calls/s (0: unlimited); burst defaults to rate
    streams = 8                # open Watch/SubscribeContext streams (0: unlimited)

    [[quotas]]                 # per namespace, checked in each write's transaction (0: none)
    namespace = "acme/docs"
    memory_entries = 10000     # also memory_bytes, context_entries, context_bytes,
    memory_bytes = 100000000   # idempotency_entries, idempotency_bytes
    """
    data = tomllib.loads(path.read_text())
    problems: list[str] = []
    tokens = []
    for i, a in enumerate(data.get("agents", [])):
        try:
            tokens.append(
                TokenEntry(str(a["id"]), str(a.get("role", "")), str(a.get("token_sha256", "")))
            )
        except KeyError as exc:
            problems.append(f"agents[{i}]: missing {exc.args[0]}")
    grants = []
    for i, g in enumerate(data.get("grants", [])):
        try:
            ops = frozenset(Operation(o) for o in g["operations"])
        except (KeyError, ValueError) as exc:
            problems.append(f"grants[{i}].operations: {exc}")
            continue
        if not (g.get("role") or g.get("agent")):
            problems.append(f"grants[{i}]: needs role or agent")
            continue
        patterns = tuple(str(p) for p in g.get("namespaces", []))
        if not patterns:
            problems.append(f"grants[{i}].namespaces: at least one pattern needed")
            continue
        grants.append(Grant(patterns, ops, str(g.get("role", "")), str(g.get("agent", ""))))
    limits = []
    for i, lim in enumerate(data.get("limits", [])):
        try:
            rate = float(lim.get("rate", 0))
            entry = RoleLimits(
                role=str(lim["role"]),
                rate=rate,
                burst=float(lim.get("burst", rate)),
                streams=int(lim.get("streams", 0)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            problems.append(f"limits[{i}]: {exc!r} (needs role, and numbers rate/burst/streams)")
            continue
        if entry.rate < 0 or entry.burst < 0 or entry.streams < 0:
            problems.append(f"limits[{i}]: rate, burst and streams must be >= 0")
            continue
        limits.append(entry)
    quotas = []
    for i, q in enumerate(data.get("quotas", [])):
        namespace = str(q.get("namespace", ""))
        if not namespace:
            problems.append(f"quotas[{i}]: needs namespace")
            continue
        for kind in QUOTA_KINDS:
            entries, size = q.get(f"{kind}_entries", 0), q.get(f"{kind}_bytes", 0)
            if not isinstance(entries, int) or not isinstance(size, int) or entries < 0 or size < 0:
                problems.append(
                    f"quotas[{i}]: {kind}_entries and {kind}_bytes must be integers >= 0"
                )
            elif entries or size:
                quotas.append(Quota(namespace, kind, entries, size))
    if problems:
        raise ValueError(f"policy {path}: " + "; ".join(problems))
    return Policy(
        grants=tuple(grants), tokens=tuple(tokens), limits=tuple(limits), quotas=tuple(quotas)
    )
