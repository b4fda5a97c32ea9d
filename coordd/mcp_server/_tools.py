"""The tools of ``coordd mcp``: claims, memory, tasks, context, once_*, agreements, gate.

Every tool acts as the server's one agent (its identity comes from the server's flags, token
or sidecar); no tool takes an agent id or role to act as. Each answers with one JSON object
(see ``_results``): contention is an answer (``acquired: false``, ``state: in_progress``,
``passed: false``) and coordd errors are tool errors with a ``next`` line.
"""

# No `from __future__ import annotations`: the MCP SDK reads these signatures at runtime to
# build each tool's JSON schema.

import functools
import inspect
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Annotated, Any, Literal

from mcp.types import CallToolResult
from pydantic import Field
from typing_extensions import TypedDict

from coordd.errors import CoorddError
from coordd_client import AsyncClient, Fence, Participant
from coordd_client._idempotency import decode_result, encode_result, fingerprint

from ._results import answer, failure, iso, plain

Embed = Callable[[list[str]], Awaitable[list[list[float]]]]

NS = Annotated[
    str,
    Field(description="coordd namespace: 1-8 segments of [A-Za-z0-9._:-] joined by '/'"),
]
TTL = Annotated[float, Field(description="lease length in seconds (0.1 to 86400)", gt=0)]


class FenceArg(TypedDict):
    """A claim's fence, as claim_acquire returns it."""

    namespace: Annotated[str, Field(description="the claim's namespace")]
    resource: Annotated[str, Field(description="the claimed resource")]
    token: Annotated[int, Field(description="the claim's fencing token", gt=0)]


FENCE = Annotated[
    FenceArg | None,
    Field(
        description="a claim's fence {namespace, resource, token} (from claim_acquire): the"
        " write applies only while that claim is still yours"
    ),
]
TIER = Literal["working", "episodic", "semantic"]


def _fence(value: FenceArg | dict[str, Any] | None) -> Fence | None:
    if not value:
        return None
    return Fence(
        namespace=str(value.get("namespace", "")),
        resource=str(value.get("resource", "")),
        token=int(value.get("token", 0)),
    )


def _entry(e: Any) -> dict[str, Any]:
    """A memory entry without its embedding (long and useless to a model)."""
    out: dict[str, Any] = plain(e)
    out.pop("embedding", None)
    return out


def _tool(
    *, reads: str | None = None, writes: str | None = None
) -> Callable[[Callable[..., Awaitable[CallToolResult]]], Callable[..., Awaitable[CallToolResult]]]:
    """Make a method a tool: coordd errors and refused arguments become tool results (never
    protocol errors), and the namespace it *reads* or *writes* (the argument of that name)
    is tracked for the gate's default read vector."""

    def wrap(
        fn: Callable[..., Awaitable[CallToolResult]],
    ) -> Callable[..., Awaitable[CallToolResult]]:
        @functools.wraps(fn)
        async def run(self: "Tools", *args: Any, **kwargs: Any) -> CallToolResult:
            namespace = kwargs.get(reads or writes or "")
            before = self.client.session.revision(namespace) if writes and namespace else 0
            try:
                result = await fn(self, *args, **kwargs)
            except CoorddError as exc:
                return failure(exc)
            except (ValueError, KeyError, TypeError) as exc:  # refused before reaching coordd
                return answer(
                    {
                        "error": {"code": "INVALID_ARGUMENT", "reason": "INVALID_ARGUMENT"},
                        "summary": f"invalid arguments: {exc}",
                        "next": "Fix the arguments and call again.",
                    },
                    error=True,
                )
            if isinstance(namespace, str) and namespace and not result.is_error:
                if reads:
                    self.saw(namespace)
                else:
                    self.wrote(namespace, before)
            return result

        return run

    return wrap


class Tools:
    """The tool implementations, bound to one agent's client."""

    def __init__(self, client: AsyncClient, embed: Embed | None = None) -> None:
        self.client = client
        self.embed = embed
        self.read: dict[str, int] = {}
        """What the agent's decisions rest on: namespace -> revision when it last read there
        through a tool (the gate's default). Snapshots at read time: change feeds the server
        follows later do not move them."""

    def saw(self, namespace: str) -> None:
        self.read[namespace] = self.client.session.revision(namespace)

    def wrote(self, namespace: str, before: int) -> None:
        """Your own write does not move what you read, unless others wrote in between."""
        after = self.client.session.revision(namespace)
        if self.read.get(namespace) == before and after == before + 1:
            self.read[namespace] = after

    def all(self) -> list[Callable[..., Awaitable[CallToolResult]]]:
        return [
            self.claim_acquire,
            self.claim_renew,
            self.claim_release,
            self.claims_list,
            self.memory_put,
            self.memory_get,
            self.memory_search,
            self.memory_history,
            self.task_start,
            self.task_end,
            self.context_post,
            self.context_inbox,
            self.context_ack,
            self.once_begin,
            self.once_complete,
            self.once_fail,
            self.agreement_propose,
            self.agreement_vote,
            self.agreement_get,
            self.gate,
        ]

    # -- claims ------------------------------------------------------------------------------

    @_tool(writes="namespace")
    async def claim_acquire(
        self,
        namespace: NS,
        resource: Annotated[
            str | list[str],
            Field(description="the resource to claim, or a list: the first free one is taken"),
        ],
        ttl_seconds: TTL = 60.0,
        wait_seconds: Annotated[
            float, Field(description="wait up to this long for a held claim (0: answer now)", ge=0)
        ] = 0.0,
        progress: Annotated[str, Field(description="a note on what you are doing")] = "",
    ) -> CallToolResult:
        """Claim work so no other agent does it. Answers at once: acquired with your fencing
        token and fence (pass it to writes made under the claim), or not acquired with who
        holds it and until when, so you can pick other work."""
        claims = self.client.claims
        if isinstance(resource, list):
            got = await claims.acquire_any(namespace, resource, ttl_seconds, progress=progress)
        else:
            got = await claims.acquire(
                namespace, resource, ttl_seconds, wait=wait_seconds or None, progress=progress
            )
        if got.acquired and got.claim is not None:
            c = got.claim
            return answer(
                {
                    "acquired": True,
                    "claim": c,
                    "fence": c.fence,
                    "summary": f"you hold {namespace}/{c.resource} until {iso(c.expire_time)}"
                    f" (fencing token {c.fencing_token})",
                    "next": "Do the work; pass `fence` to memory_put/context_post/once_complete;"
                    " claim_renew before the lease ends; claim_release when done.",
                }
            )
        if got.claim is None:
            return answer(
                {
                    "acquired": False,
                    "summary": f"every resource of {resource} in {namespace} is held",
                    "next": "Work on something else, or try again later.",
                }
            )
        c = got.claim
        return answer(
            {
                "acquired": False,
                "holder": c,
                "summary": f"{namespace}/{c.resource} is held by {c.holder_agent_id} until"
                f" {iso(c.expire_time)}" + (f" ({c.progress})" if c.progress else ""),
                "next": "Do not work on it: pick another resource, or call claim_acquire again"
                f" after {iso(c.expire_time)} (or with wait_seconds).",
            }
        )

    @_tool(writes="namespace")
    async def claim_renew(
        self,
        namespace: NS,
        resource: str,
        fencing_token: Annotated[int, Field(description="the token claim_acquire gave you", gt=0)],
        ttl_seconds: TTL = 60.0,
        progress: Annotated[
            str | None, Field(description="progress note (a heartbeat others can read)")
        ] = None,
    ) -> CallToolResult:
        """Extend your claim's lease from now, optionally recording progress."""
        c = await self.client.claims.renew(
            namespace, resource, fencing_token, ttl_seconds, progress=progress
        )
        return answer(
            {
                "renewed": True,
                "claim": c,
                "summary": f"you hold {namespace}/{resource} until {iso(c.expire_time)}",
            }
        )

    @_tool(writes="namespace")
    async def claim_release(
        self,
        namespace: NS,
        resource: str,
        fencing_token: Annotated[int, Field(gt=0)],
    ) -> CallToolResult:
        """Release your claim so others may take the resource."""
        await self.client.claims.release(namespace, resource, fencing_token)
        return answer({"released": True, "summary": f"released {namespace}/{resource}"})

    @_tool(reads="namespace")
    async def claims_list(
        self,
        namespace: NS,
        holder_agent_id: Annotated[
            str, Field(description="only claims of this holder (a filter, not an identity)")
        ] = "",
        page_size: Annotated[int, Field(ge=0, le=1000)] = 100,
        page_token: str = "",
    ) -> CallToolResult:
        """List the live claims of a namespace: who works on what, until when."""
        page = await self.client.claims.list(
            namespace, holder_agent_id=holder_agent_id, page_size=page_size, page_token=page_token
        )
        return answer(
            {
                "claims": page.claims,
                "next_page_token": page.next_page_token,
                "revision": page.revision,
            }
        )

    # -- memory ------------------------------------------------------------------------------

    @_tool(writes="namespace")
    async def memory_put(
        self,
        namespace: NS,
        key: Annotated[str, Field(description="entry key, 1-512 bytes")],
        value: Annotated[Any, Field(description="the value (any JSON)")],
        tier: Annotated[
            TIER,
            Field(
                description="semantic: versioned knowledge; episodic: what happened; working:"
                " belongs to task_id and goes when the task ends"
            ),
        ] = "semantic",
        mode: Annotated[
            Literal["lww", "cas", "merge"] | None,
            Field(
                description="lww: replace; cas: only if the entry is at expected_revision;"
                " merge: RFC 7386 merge patch. Unset: the namespace's default"
            ),
        ] = None,
        expected_revision: Annotated[
            int | None,
            Field(description="for cas: the revision you read (0: the key must not exist)", ge=0),
        ] = None,
        ttl_seconds: Annotated[
            float | None, Field(description="expire after this long", gt=0)
        ] = None,
        tags: Annotated[list[str], Field(description="up to 32 tags")] = [],  # noqa: B006
        task_id: Annotated[str, Field(description="the task the entry belongs to")] = "",
        text: Annotated[str, Field(description="text to index for search (embedded)")] = "",
        embedding: Annotated[
            list[float] | None, Field(description="a vector to index instead of embedding text")
        ] = None,
        fence: FENCE = None,
    ) -> CallToolResult:
        """Write a memory entry. Provenance (you, your role, time, trace) is stamped by coordd."""
        if embedding is None and text and self.embed is not None:
            embedding = (await self.embed([text]))[0]
        e = await self.client.memory.put(
            namespace,
            key,
            value,
            tier=tier,
            mode=mode,
            expected_revision=expected_revision,
            ttl=ttl_seconds,
            tags=tags,
            task_id=task_id,
            text=text,
            embedding=embedding,
            fence=_fence(fence),
        )
        return answer(
            {
                "written": True,
                "entry": _entry(e),
                "summary": f"{namespace}/{key} is at revision {e.revision}",
            }
        )

    @_tool(reads="namespace")
    async def memory_get(
        self,
        namespace: NS,
        key: str,
        as_of: Annotated[
            datetime | None, Field(description="the version current at this time (ISO 8601)")
        ] = None,
    ) -> CallToolResult:
        """Read an entry (always reflecting your own writes). Its revision is what
        expected_revision wants for a compare-and-set update."""
        e = await self.client.memory.get(namespace, key, as_of=as_of)
        if e is None:
            return answer(
                {
                    "found": False,
                    "summary": f"{namespace}/{key} does not exist",
                    "next": "Create it with memory_put (expected_revision=0 to be sure you create"
                    " it).",
                }
            )
        return answer({"found": True, "entry": _entry(e)})

    @_tool()
    async def memory_search(
        self,
        namespace_prefixes: Annotated[
            list[str], Field(description="namespaces to search, with everything below them")
        ],
        query: Annotated[
            str | None, Field(description="text to search by (the server embeds it)")
        ] = None,
        vector: Annotated[list[float] | None, Field(description="a vector to search by")] = None,
        k: Annotated[int, Field(ge=1, le=1000)] = 5,
        tier: TIER | None = None,
        tags: list[str] = [],  # noqa: B006
        task_id: str = "",
        include_stale: bool = False,
    ) -> CallToolResult:
        """Nearest entries by meaning, among those you may read (filters apply first)."""
        if vector is None:
            if query is None:
                raise ValueError("give query (text) or vector")
            if self.embed is None:
                return answer(
                    {
                        "error": {"code": "FAILED_PRECONDITION", "reason": "NO_EMBEDDER"},
                        "summary": "this server has no embedding function to search by text",
                        "next": "Search with `vector`, or restart coordd mcp with --embed"
                        " module:function.",
                    },
                    error=True,
                )
            vector = (await self.embed([query]))[0]
        hits = await self.client.memory.search(
            vector,
            k,
            namespace_prefixes,
            tier=tier,
            tags=tags,
            task_id=task_id,
            include_stale=include_stale,
        )
        for prefix in namespace_prefixes:
            self.saw(prefix)
        for h in hits:
            self.saw(h.entry.namespace)
        return answer(
            {
                "hits": [
                    {"similarity": round(1.0 - h.distance, 6), "entry": _entry(h.entry)}
                    for h in hits
                ]
            }
        )

    @_tool(reads="namespace")
    async def memory_history(
        self, namespace: NS, key: str, page_size: Annotated[int, Field(ge=0, le=1000)] = 20
    ) -> CallToolResult:
        """Every stored version of an entry, newest first, with who wrote each and when."""
        versions = await self.client.memory.history(namespace, key, page_size=page_size)
        return answer({"versions": [_entry(v) for v in versions]})

    @_tool(writes="namespace")
    async def task_start(
        self,
        namespace: NS,
        task_id: Annotated[str, Field(description="the task id, 1-255 bytes")],
        lease_seconds: Annotated[
            float | None, Field(description="end the task if not renewed by then", gt=0)
        ] = None,
    ) -> CallToolResult:
        """Open a task: working memory written with its task_id lives until task_end."""
        until = await self.client.memory.start_task(namespace, task_id, lease=lease_seconds)
        return answer({"started": True, "lease_expire_time": iso(until)})

    @_tool(writes="namespace")
    async def task_end(
        self,
        namespace: NS,
        task_id: str,
        outcome: Literal["succeeded", "failed", "cancelled"] = "succeeded",
        archive: Annotated[
            bool, Field(description="keep the working memory as one episodic entry")
        ] = False,
        summary: Annotated[Any, Field(description="the archived episode's value (JSON)")] = None,
    ) -> CallToolResult:
        """End a task: its working memory is deleted at once (or archived as one episode)."""
        removed, episode = await self.client.memory.end_task(
            namespace, task_id, outcome=outcome, archive=archive, summary=summary
        )
        return answer(
            {"ended": True, "removed": removed, "episode": _entry(episode) if episode else None}
        )

    # -- context -----------------------------------------------------------------------------

    @_tool(writes="namespace")
    async def context_post(
        self,
        namespace: NS,
        content: Annotated[Any, Field(description="what to hand over (any JSON)")],
        context_type: Annotated[str, Field(description="what kind of entry, e.g. 'review'")],
        to_role: Annotated[str, Field(description="deliver to agents of this role")] = "",
        to_agent_id: Annotated[str, Field(description="or to this one agent")] = "",
        delivery: Annotated[
            Literal["each", "any"],
            Field(description="each: every agent of the role; any: one of them takes it"),
        ] = "each",
        task_id: str = "",
        correlation_id: str = "",
        ttl_seconds: Annotated[float | None, Field(gt=0)] = None,
        fence: FENCE = None,
    ) -> CallToolResult:
        """Hand context to a role or an agent; the receiver sees everything you wrote first."""
        e = await self.client.context.post(
            namespace,
            content,
            to_role=to_role,
            to_agent_id=to_agent_id,
            context_type=context_type,
            delivery=delivery,
            task_id=task_id,
            correlation_id=correlation_id,
            ttl=ttl_seconds,
            fence=_fence(fence),
        )
        return answer({"posted": True, "id": e.id, "entry": e})

    @_tool(reads="namespace")
    async def context_inbox(
        self,
        namespace: NS,
        unread: Annotated[bool, Field(description="only entries you have not acknowledged")] = True,
        context_type: str = "",
        limit: Annotated[int, Field(ge=0, le=1000)] = 20,
    ) -> CallToolResult:
        """Read the entries addressed to you (or your role). Acknowledge each after acting."""
        entries = await self.client.context.inbox(
            namespace, unread=unread, context_type=context_type, limit=limit
        )
        return answer(
            {
                "entries": entries,
                "next": "Act on each entry, then context_ack its id." if entries else "",
            }
        )

    @_tool(writes="namespace")
    async def context_ack(
        self, namespace: NS, ids: Annotated[list[int], Field(description="entry ids")]
    ) -> CallToolResult:
        """Acknowledge entries you acted on (they leave your unread inbox)."""
        done = await self.client.context.ack(namespace, ids)
        return answer({"acknowledged": done})

    # -- once: side effects under an idempotency key ----------------------------------------

    @_tool(writes="namespace")
    async def once_begin(
        self,
        namespace: NS,
        key: Annotated[str, Field(description="names the side effect, e.g. 'refund-order-42'")],
        payload: Annotated[
            Any, Field(description="what the effect is (JSON): the same key needs the same payload")
        ],
        lease_seconds: Annotated[float, Field(gt=0)] = 60.0,
    ) -> CallToolResult:
        """Start a side effect (a payment, an email, a deploy) at most once across retries.
        Run the effect only when the answer says `run: true`, then call once_complete."""
        got = await self.client.idempotency.begin(
            namespace, key, fingerprint(payload), lease=lease_seconds
        )
        state = got.state.value
        base: dict[str, Any] = {"state": state, "attempt": got.attempt}
        if state == "acquired":
            return answer(
                {
                    **base,
                    "run": True,
                    "summary": f"attempt {got.attempt} of {key} is yours",
                    "next": f"Perform the side effect now, then once_complete with attempt"
                    f" {got.attempt} and its result (or once_fail).",
                }
            )
        if state == "completed":
            return answer(
                {
                    **base,
                    "run": False,
                    "result": decode_result(got.result),
                    "summary": f"{key} already happened",
                    "next": "Do NOT perform it again: use the stored result.",
                }
            )
        if state == "failed":
            return answer(
                {
                    **base,
                    "run": False,
                    "error": got.error,
                    "summary": f"{key} failed for good: {got.error}",
                    "next": "Do not retry it; report the failure.",
                }
            )
        return answer(
            {
                **base,
                "run": False,
                "retry_after_seconds": got.retry_after.total_seconds(),
                "summary": f"{key} is being performed by another runner",
                "next": "Do not perform it; call once_begin again after retry_after_seconds.",
            }
        )

    @_tool(writes="namespace")
    async def once_complete(
        self,
        namespace: NS,
        key: str,
        attempt: Annotated[int, Field(gt=0)],
        result: Annotated[
            Any, Field(description="the effect's result (JSON), returned to retries")
        ],
        fence: FENCE = None,
    ) -> CallToolResult:
        """Record that the side effect happened, with its result."""
        await self.client.idempotency.complete(
            namespace, key, attempt, encode_result(result), fence=_fence(fence)
        )
        return answer({"completed": True, "summary": f"{key} recorded as done"})

    @_tool(writes="namespace")
    async def once_fail(
        self,
        namespace: NS,
        key: str,
        attempt: Annotated[int, Field(gt=0)],
        retryable: Annotated[bool, Field(description="true: another attempt may run it")] = True,
        error: str = "",
    ) -> CallToolResult:
        """Give up an attempt: retryable frees the key for another try, else it fails for good."""
        await self.client.idempotency.fail(
            namespace, key, attempt, retryable=retryable, error=error
        )
        return answer({"failed": True, "retryable": retryable})

    # -- agreements --------------------------------------------------------------------------

    @_tool(writes="namespace")
    async def agreement_propose(
        self,
        namespace: NS,
        agreement_id: str,
        participants: Annotated[
            list[str | dict[str, Any]],
            Field(description="agent ids, or {role, count} for any count agents of a role"),
        ],
        deadline_seconds: Annotated[float, Field(gt=0)],
        transition: Annotated[Any, Field(description="what is being agreed (JSON)")] = None,
        accept: Annotated[
            bool, Field(description="vote accept yourself if you have a seat")
        ] = True,
    ) -> CallToolResult:
        """Propose a decision several agents must all accept before the deadline."""
        seats = [
            p
            if isinstance(p, str)
            else Participant(
                agent_id=str(p.get("agent_id", "")),
                role=str(p.get("role", "")),
                count=int(p.get("count", 1)),
            )
            for p in participants
        ]
        handle = await self.client.agreements.propose(
            namespace,
            agreement_id,
            participants=seats,
            deadline=deadline_seconds,
            transition=transition,
            accept=accept,
        )
        return answer({"created": handle.created, "agreement": handle.agreement})

    @_tool(writes="namespace")
    async def agreement_vote(
        self, namespace: NS, agreement_id: str, accept: bool, reason: str = ""
    ) -> CallToolResult:
        """Vote on an agreement as this agent (votes are final)."""
        a = await self.client.agreements.vote(namespace, agreement_id, accept, reason)
        return answer({"agreement": a, "summary": f"{agreement_id} is {a.state.value}"})

    @_tool(reads="namespace")
    async def agreement_get(self, namespace: NS, agreement_id: str) -> CallToolResult:
        """Read an agreement: its state, votes and decision."""
        a = await self.client.agreements.get(namespace, agreement_id)
        return answer({"agreement": a, "summary": f"{agreement_id} is {a.state.value}"})

    # -- the gate ----------------------------------------------------------------------------

    @_tool()
    async def gate(
        self,
        fences: Annotated[
            list[FenceArg],
            Field(description="the fences of the claims you act under (from claim_acquire)"),
        ] = [],  # noqa: B006
        read: Annotated[
            dict[str, int] | None,
            Field(
                description="namespace -> revision your decision was based on; default: every"
                " namespace you read through this server's tools, at the revision you saw"
            ),
        ] = None,
        kinds: Annotated[
            list[
                Literal["claim", "memory", "context", "task", "idempotency", "agreement", "policy"]
            ],
            Field(
                description="which changes count as a namespace moving; default: memory,"
                " context, task and agreement changes (not other agents' claims)"
            ),
        ] = ["memory", "context", "task", "agreement"],  # noqa: B006
    ) -> CallToolResult:
        """Call right before a side effect outside coordd (a payment, an email, a deploy):
        passes only if every claim you act under is still yours and nothing you read has
        changed. If refused, it says which claim was lost (to whom) or what moved."""
        vector = read if read is not None else dict(self.read)
        result = await self.client.gate(
            [f for f in (_fence(x) for x in fences) if f is not None], read=vector, kinds=kinds
        )
        return answer(
            {
                "passed": result.passed,
                "lost_claims": result.lost_claims,
                "moved_namespaces": result.moved_namespaces,
                "summary": result.explain(),
                "next": result.advice,
            }
        )


def tool_names(tools: Tools) -> dict[str, set[str]]:
    """Each tool's argument names (to refuse unknown ones by name)."""
    return {
        fn.__name__: {p for p in inspect.signature(fn).parameters if p != "self"}
        for fn in tools.all()
    }
