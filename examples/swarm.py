"""A multi-agent swarm on coordd, with crashes injected: run it against ``coordd serve``.

    coordd serve &                        # in one terminal (or point --addr at a daemon)
    python examples/swarm.py              # 50 documents, 4 workers, a reviewer, an orchestrator
    python examples/swarm.py --agents 8 --docs 200 --seed 3

What happens:

* The **orchestrator** fans the documents out: one context entry to every worker.
* Each **worker** (its own process) routes around work other workers hold with
  ``claims.acquire_any``, holds the document's claim while it works (renewed in the
  background) and runs the document's side effect through ``idempotency.once``, so it happens
  once whatever fails. It hands each result to the reviewer through context.
* The script injects failures, chosen by ``--seed``:
  - a worker **crashes** mid-document (``os._exit``): nothing is released, its lease lapses,
    another worker takes the claim over with a higher fencing token and the idempotency key
    over with a higher attempt, and the crashed worker is restarted as a new agent;
  - a worker **stalls** (a stop-the-world pause longer than its lease): it wakes up with a
    stale claim, and the effect gate (``client.gate([held.fence])``), asked right before the
    side effect, refuses it;
  - the orchestrator **retries** finished documents (as if their replies were lost): the
    retries get the stored result and nothing runs twice.
* The **reviewer** collects the results from its inbox and proposes the final report as an
  agreement; the orchestrator checks it against the idempotency records and accepts. The
  report is written to memory by coordd in the same transaction as the decision.

The side effect appends to a ledger file that only it writes; every worker logs when it starts
and stops working on a document. At the end the script checks, from those files alone:
each document's side effect happened exactly once, and no document was worked on by two
holders at once (an older holder still at work when a newer one started must have been fenced
off without acting). It prints what happened and exits 1 if an invariant failed.

The limit it shows rather than hides: an external effect and coordd's record of it cannot be
one transaction. The idempotency lease (4 x the claim's) bounds the gap; a runner frozen longer
than that between its effect and its completion could be taken over and the effect repeated,
and the checks would say so.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import logging
import multiprocessing
import os
import random
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from coordd_client import (
    AsyncClient,
    ClaimHeldError,
    ClaimLostError,
    ClaimNotHeldError,
    Fence,
    FencingTokenStaleError,
    HeldClaim,
    IdempotencyAttemptSupersededError,
    NotFoundError,
    RevisionMismatchError,
    TransitionWrite,
    UnavailableError,
)


class EffectRefused(Exception):
    """The effect gate said no: this agent no longer holds the claim it worked under."""


class WorkerFailed(Exception):
    """A worker process ended with an error of its own (not an injected crash)."""


CRASH_EXIT = 75  # a worker that dies mid-document exits with this; the supervisor restarts it
REPORT_ID = "final-report"


# --------------------------------------------------------------------------------------------
# The plan: which documents fail how, fixed by the seed before anything runs.


@dataclass(frozen=True)
class Plan:
    namespace: str
    docs: list[str]
    workers: int
    lease: float
    crash: frozenset[str]  # first attempt dies mid-document
    stall: frozenset[str]  # first attempt pauses past its lease
    retry: frozenset[str]  # the orchestrator sends these again once they are done
    ledger: Path  # the side effect's ledger: one line per effect, written only by it
    activity: Path  # workers' log: work / published / crash / fenced / done per document
    addr: str | None

    @classmethod
    def make(cls, args: argparse.Namespace, workdir: Path) -> Plan:
        rng = random.Random(args.seed)
        docs = [f"doc-{i:03d}" for i in range(args.docs)]

        def pick(rate: float, pool: list[str]) -> list[str]:
            n = min(len(pool), max(1, round(rate * len(docs)))) if rate > 0 else 0
            return rng.sample(pool, n)

        crash = pick(args.crash_rate, docs)
        stall = pick(args.stall_rate, [d for d in docs if d not in crash])
        retry = pick(args.retry_rate, docs)
        return cls(
            namespace=args.namespace or f"examples/swarm-{uuid.uuid4().hex[:8]}",
            docs=docs,
            workers=args.agents,
            lease=args.lease,
            crash=frozenset(crash),
            stall=frozenset(stall),
            retry=frozenset(retry),
            ledger=workdir / "ledger.jsonl",
            activity=workdir / "activity.jsonl",
            addr=args.addr,
        )

    @property
    def idempotency_lease(self) -> float:
        """How long a runner owns a document's key: a runner that dies (or freezes) this long
        is taken over. Longer than the claim's lease, so that a holder whose claim lapsed
        while it was publishing still records what it did before anyone may run it again."""
        return self.lease * 4

    @property
    def results_ns(self) -> str:
        return f"{self.namespace}/results"


def append(path: Path, record: dict[str, Any]) -> None:
    """One JSON line, appended atomically (O_APPEND, one write) by whichever process."""
    line = (json.dumps(record, separators=(",", ":")) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def read_lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line]


# --------------------------------------------------------------------------------------------
# The external side effect. Only this function writes the ledger.


def publish(plan: Plan, doc: str, agent: str, token: int) -> dict[str, Any]:
    """Publish a document's summary somewhere outside coordd (here: a ledger file)."""
    summary = hashlib.sha256(doc.encode()).hexdigest()[:12]
    append(plan.ledger, {"doc": doc, "agent": agent, "token": token, "summary": summary})
    return {"doc": doc, "summary": summary, "by": agent}


# --------------------------------------------------------------------------------------------
# A worker: its own process, so that a crash is a real one.


def worker_main(plan: Plan, agent_id: str, index: int, seed: int) -> None:
    # The activity log records lost claims; the client's own warning would only repeat it.
    logging.getLogger("coordd_client").setLevel(logging.ERROR)
    asyncio.run(Worker(plan, agent_id, index, random.Random(f"{seed}/{agent_id}")).run())


class Worker:
    def __init__(self, plan: Plan, agent_id: str, index: int, rng: random.Random) -> None:
        self.plan = plan
        self.agent_id = agent_id
        self.index = index
        self.rng = rng
        self.docs: list[str] = []  # from the orchestrator's job entry
        self.done: set[str] = set()

    def log(self, event: str, doc: str, token: int, **extra: Any) -> None:
        append(
            self.plan.activity,
            {
                "event": event,
                "doc": doc,
                "agent": self.agent_id,
                "token": token,
                "t": time.monotonic(),
                **extra,
            },
        )

    async def run(self) -> None:
        p = self.plan
        self.client = await AsyncClient.connect(p.addr, agent_id=self.agent_id, role="worker")
        async with self.client as c:
            await self._wait_for_job()
            while True:
                # "any" entries (retries) read here are ours for a few seconds; if we die
                # before acknowledging one, it goes back to the other workers.
                for entry in await c.context.inbox(p.namespace, unread=True, lease=5):
                    if entry.context_type == "stop":
                        await c.context.ack(p.namespace, entry.id)
                        return
                    # A retry is acknowledged once handled; if another worker holds the
                    # document meanwhile, it stays ours and comes back at the next read.
                    if entry.context_type == "retry" and await self.process(
                        entry.content["doc"], retry=True
                    ):
                        await c.context.ack(p.namespace, entry.id)
                self.done |= await recorded(c, p)
                pending = [d for d in self.docs if d not in self.done]
                if not pending:
                    await asyncio.sleep(0.05)  # all done: wait for retries or the stop
                    continue
                # Start at a different place than the other workers, and route around any
                # document another worker holds: acquire_any takes the first free one.
                k = (self.index * len(pending)) // p.workers
                got = await c.claims.acquire_any(
                    p.namespace, pending[k:] + pending[:k], ttl=p.lease
                )
                if got.acquired and got.claim is not None:
                    await self.process(got.claim.resource, retry=False)
                else:
                    await asyncio.sleep(0.02)  # everything is claimed: wait for a lapse

    async def _wait_for_job(self) -> None:
        """The orchestrator's fan-out: one entry to every worker (a restarted one too)."""
        while True:
            for entry in await self.client.context.inbox(self.plan.namespace, context_type="job"):
                self.docs = list(entry.content["docs"])
                await self.client.context.ack(self.plan.namespace, entry.id)
                return
            await asyncio.sleep(0.05)

    async def process(self, doc: str, *, retry: bool) -> bool:
        """Work on *doc* under its claim; its side effect runs at most once, ever.

        Returns False if another worker held the document all along (nothing was done).
        """
        p, c = self.plan, self.client
        key = f"publish:{doc}"
        first = await c.idempotency.get(p.namespace, key) is None
        ran = False
        token = 0
        try:
            # Re-acquiring a claim we already hold renews it; hold() keeps renewing it.
            async with c.claims.hold(p.namespace, doc, p.lease, wait=p.lease * 4) as held:
                token = held.fencing_token

                async def work() -> dict[str, Any]:
                    nonlocal ran
                    self.log("work", doc, token)
                    await asyncio.sleep(self.rng.uniform(0.005, 0.03))  # reading, summarizing
                    if first and doc in p.crash:
                        self.log("crash", doc, token)
                        os._exit(CRASH_EXIT)  # dies: no release, no completion, no goodbye
                    if first and doc in p.stall:
                        # A stop-the-world pause (GC, swapped out, VM frozen): the event loop,
                        # and the lease renewal with it, stops for longer than the claim's
                        # lease (not the idempotency lease: see idempotency_lease).
                        time.sleep(p.lease * 2)
                    await self.effect_gate(held)
                    ran = True
                    result = publish(p, doc, self.agent_id, token)
                    self.log("published", doc, token)
                    return result

                # No fence on the completion: once the effect has happened, recording it is
                # right even if the claim lapsed meanwhile; a superseded attempt is refused
                # by the idempotency key itself.
                result = await c.idempotency.once(
                    p.namespace, key, {"doc": doc}, work, lease=p.idempotency_lease
                )
                self.log("done", doc, token, ran=ran, retry=retry)
                await self.hand_over(doc, result, held.fence)
            return True
        except (EffectRefused, ClaimLostError, ClaimNotHeldError) as exc:
            # Our claim lapsed while we were away: coordd refused us before we acted.
            self.log("fenced", doc, token, why=str(exc))
            return True
        except IdempotencyAttemptSupersededError as exc:
            # Refused at the gate; once() then gave the key back, but a newer attempt had it.
            cause = exc.__context__ if isinstance(exc.__context__, EffectRefused) else exc
            self.log("fenced", doc, token, why=str(cause))
            return True
        except ClaimHeldError:
            return False  # another worker holds it: route around

    async def effect_gate(self, held: HeldClaim) -> None:
        """Ask coordd, right before the external side effect, whether the claim is still ours.

        The gate answers from the database: a holder whose lease lapsed while it was away
        (a stall, a partition) learns it here, before acting, and does nothing.
        """
        verdict = await self.client.gate([held.fence])
        if not verdict:
            raise EffectRefused(verdict.explain())

    async def hand_over(self, doc: str, result: Any, fence: Fence) -> None:
        """Record the result (first writer wins) and hand it to the reviewer through context."""
        p, c = self.plan, self.client
        try:
            await c.memory.put(p.results_ns, doc, result, expected_revision=0, fence=fence)
        except RevisionMismatchError:
            return  # already recorded and handed over (a retry, or a taken-over document)
        except FencingTokenStaleError:
            # Our lease lapsed after the work was done: the next holder finds the stored
            # result through once() and records it instead.
            return
        await c.context.post(
            p.namespace, result, to_role="reviewer", context_type="result", task_id=doc
        )


async def recorded(client: AsyncClient, plan: Plan) -> set[str]:
    """The documents whose result is recorded in memory (every page)."""
    done: set[str] = set()
    token = ""
    while True:
        page = await client.memory.list(plan.results_ns, page_size=1000, page_token=token)
        done.update(e.key for e in page.entries)
        if not (token := page.next_page_token):
            return done


# --------------------------------------------------------------------------------------------
# The reviewer and the orchestrator (in this process: they do not crash).


async def reviewer(plan: Plan) -> None:
    """Collect every result from the inbox, then propose the final report as an agreement."""
    async with await AsyncClient.connect(plan.addr, agent_id="reviewer", role="reviewer") as c:
        results: dict[str, Any] = {}
        while len(results) < len(plan.docs):
            entries = await c.context.inbox(plan.namespace, context_type="result")
            for entry in entries:
                results[entry.content["doc"]] = entry.content["summary"]
            if entries:
                await c.context.ack(plan.namespace, [e.id for e in entries])
            else:
                await asyncio.sleep(0.05)
        report = report_of(results)
        proposal = await c.agreements.propose(
            plan.namespace,
            REPORT_ID,
            participants=["reviewer", "orchestrator"],
            deadline=120,
            transition=report,
            writes=[TransitionWrite(namespace=plan.namespace, key="report", value=report)],
        )
        await proposal.wait()


def report_of(summaries: dict[str, str]) -> dict[str, Any]:
    digest = hashlib.sha256(json.dumps(sorted(summaries.items())).encode()).hexdigest()[:16]
    return {"documents": len(summaries), "digest": digest}


@dataclass
class Tally:
    retries_sent: int = 0
    report: dict[str, Any] = field(default_factory=dict)
    decision: str = ""


async def orchestrator(plan: Plan, tally: Tally) -> None:
    """Fan the work out, retry finished documents, check and accept the reviewer's report."""
    async with await AsyncClient.connect(plan.addr, agent_id="orchestrator", role="orch") as c:
        ns = plan.namespace
        await c.context.post(ns, {"docs": plan.docs}, to_role="worker", context_type="job")
        retried: set[str] = set()
        while True:
            for doc in sorted(await recorded(c, plan) & plan.retry - retried):
                # "Did doc-7 go through? No reply. Send it again." (the reply was lost)
                await c.context.post(
                    ns, {"doc": doc}, to_role="worker", context_type="retry", delivery="any"
                )
                retried.add(doc)
            if len(retried) == len(plan.retry):
                break
            await asyncio.sleep(0.05)
        tally.retries_sent = len(retried)
        while True:  # every retry taken and acknowledged by a worker
            sent, after = [], 0
            while page := await c.context.sent(ns, context_type="retry", after_id=after):
                sent += page
                after = page[-1].id
            if len(sent) == len(retried) and all(e.acks for e in sent):
                break
            await asyncio.sleep(0.05)
        agreement = None
        while agreement is None:
            try:
                agreement = await c.agreements.get(ns, REPORT_ID)
            except NotFoundError:
                await asyncio.sleep(0.05)
        # Check the report against coordd's own record of every document's result.
        summaries = {}
        for doc in plan.docs:
            record = await c.idempotency.get(ns, f"publish:{doc}")
            if record is not None and record.result:
                summaries[doc] = json.loads(record.result)["summary"]
        mine = report_of(summaries)
        accept = mine == agreement.transition
        decided = await c.agreements.vote(ns, REPORT_ID, accept, "" if accept else f"I see {mine}")
        tally.report, tally.decision = decided.transition, decided.state.value
        await c.context.post(ns, {}, to_role="worker", context_type="stop")


# --------------------------------------------------------------------------------------------
# The supervisor: starts workers, restarts crashed ones as new agents, like a Deployment.


async def supervise(plan: Plan, seed: int) -> int:
    ctx = multiprocessing.get_context("spawn")
    crashes = 0

    async def run_slot(index: int) -> None:
        nonlocal crashes
        for incarnation in range(len(plan.docs) + 1):
            agent_id = f"worker-{index}" + (f".r{incarnation}" if incarnation else "")
            proc = ctx.Process(target=worker_main, args=(plan, agent_id, index, seed))
            proc.start()
            try:
                await asyncio.to_thread(proc.join)
            finally:
                if proc.is_alive():  # the run is being stopped: stop the worker with it
                    proc.terminate()
            if proc.exitcode != CRASH_EXIT:
                if proc.exitcode != 0:
                    raise WorkerFailed(f"{agent_id} failed with exit code {proc.exitcode}")
                return
            crashes += 1

    await asyncio.gather(*(run_slot(i) for i in range(plan.workers)))
    return crashes


async def swarm(plan: Plan, seed: int, timeout: float) -> tuple[Tally, int]:
    """Run every agent; the first failure (or the timeout) stops them all."""
    tally = Tally()
    supervisor = asyncio.create_task(supervise(plan, seed))
    agents: asyncio.Future[Any] = asyncio.gather(reviewer(plan), orchestrator(plan, tally))
    both: set[asyncio.Future[Any]] = {supervisor, agents}
    try:
        async with asyncio.timeout(timeout):
            done, _ = await asyncio.wait(both, return_when=asyncio.FIRST_EXCEPTION)
            for task in done:
                task.result()  # raises the failure, if that is why we woke up
            await agents
            return tally, await supervisor
    finally:
        for task in (supervisor, agents):
            task.cancel()
        await asyncio.gather(supervisor, agents, return_exceptions=True)


# --------------------------------------------------------------------------------------------
# The checks, from the ledger and the activity log alone.


def check(plan: Plan) -> tuple[dict[str, int], list[str]]:
    """What happened, and every invariant violation found."""
    effects = read_lines(plan.ledger)
    activity = read_lines(plan.activity)
    problems = []
    per_doc = Counter(e["doc"] for e in effects)
    for doc in plan.docs:
        if per_doc[doc] != 1:
            problems.append(f"{doc}: side effect ran {per_doc[doc]} times (expected exactly once)")
    problems += [f"{doc}: not a document of this run" for doc in per_doc if doc not in plan.docs]

    # Two holders at once: a worker's section on a document runs from the start of its work
    # to its side effect (or its crash, or the gate's refusal). A section overlapping a newer
    # holder's is only acceptable if the older one was refused and did nothing.
    open_sections: dict[str, dict[str, Any]] = {}
    for a in sorted(activity, key=lambda r: r["t"]):
        doc = a["doc"]
        if a["event"] == "work":
            other = open_sections.get(doc)
            if other is not None and other["agent"] != a["agent"]:
                outcome = _section_end(activity, other)
                if outcome is None or outcome["event"] != "fenced" or other["token"] >= a["token"]:
                    problems.append(
                        f"{doc}: {a['agent']} (token {a['token']}) started while "
                        f"{other['agent']} (token {other['token']}) was still at work"
                    )
            open_sections[doc] = a
        elif a["event"] in SECTION_ENDS and open_sections.get(doc, {}).get("agent") == a["agent"]:
            del open_sections[doc]

    done = [a for a in activity if a["event"] == "done"]
    figures = {
        "documents": len(plan.docs),
        "side effects (ledger lines)": len(effects),
        "workers crashed mid-document": sum(a["event"] == "crash" for a in activity),
        "stale holders refused": sum(a["event"] == "fenced" for a in activity),
        "claims lost and taken over": _taken_over(effects, activity),
        "retries absorbed": sum(1 for a in done if a["retry"] and not a["ran"]),
        "duplicates prevented": sum(1 for a in done if not a["ran"]),
    }
    return figures, problems


SECTION_ENDS = ("published", "crash", "fenced")


def _section_end(activity: list[dict[str, Any]], start: dict[str, Any]) -> dict[str, Any] | None:
    """How the section opened by *start* ended (None: it never did)."""
    return next(
        (
            a
            for a in sorted(activity, key=lambda r: r["t"])
            if a["event"] in SECTION_ENDS
            and a["agent"] == start["agent"]
            and a["doc"] == start["doc"]
            and a["t"] >= start["t"]
        ),
        None,
    )


def stories(plan: Plan) -> list[str]:
    """One line per injected crash or stall: who failed, who took over, what coordd said."""
    activity = sorted(read_lines(plan.activity), key=lambda r: r["t"])
    published = {e["doc"]: e for e in read_lines(plan.ledger)}
    lines = []
    for a in activity:
        if a["event"] not in ("crash", "fenced"):
            continue
        doc = a["doc"]
        what = "crashed mid-document" if a["event"] == "crash" else "stalled past its lease"
        text = f"{doc}: {a['agent']} (token {a['token']}) {what}"
        if a["event"] == "fenced":  # the gate's own words, without its advice
            text += f"; on waking, {a['why'].split('. Next:')[0]}"
        done = published.get(doc)
        if done is not None and done["agent"] != a["agent"]:
            text += f"; {done['agent']} took it over (token {done['token']}) and published it"
        elif done is not None and done["token"] != a["token"]:
            text += f"; it claimed it again (token {done['token']}) and published it"
        lines.append(text)
    return lines


def _taken_over(effects: list[dict[str, Any]], activity: list[dict[str, Any]]) -> int:
    """Documents whose side effect ran under another grant than the first one made for them."""
    first: dict[str, int] = {}
    for a in sorted(activity, key=lambda r: r["t"]):
        if a["event"] == "work":
            first.setdefault(a["doc"], a["token"])
    return sum(1 for e in effects if e["token"] != first.get(e["doc"]))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="swarm.py",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--addr", help="coordd's address (default: $COORDD_ADDR, then 127.0.0.1:7420)")
    add("--agents", type=int, default=4, metavar="N", help="worker processes (default 4)")
    add("--docs", type=int, default=50, metavar="M", help="documents (default 50)")
    add("--seed", type=int, default=1, help="chooses which documents fail how (default 1)")
    add("--lease", type=float, default=2.0, metavar="S", help="claim lease (default 2 s)")
    add("--crash-rate", type=float, default=0.06, metavar="R", help="crashes (default 0.06)")
    add("--stall-rate", type=float, default=0.04, metavar="R", help="stalls (default 0.04)")
    add("--retry-rate", type=float, default=0.2, metavar="R", help="retries (default 0.2)")
    add("--namespace", help="where to work (default: a fresh examples/swarm-XXXXXXXX)")
    add("--workdir", type=Path, help="keep the ledger and activity log here (default: temp)")
    add("--timeout", type=float, default=600, metavar="S", help="give up after (default 600)")
    args = parser.parse_args(argv)
    if args.agents < 1 or args.docs < 1:
        parser.error("--agents and --docs must be at least 1")
    if args.lease < 1:  # it is also the idempotency lease, which coordd bounds at 1 s
        parser.error(f"--lease must be at least 1 second (got {args.lease:g})")
    return args


async def reachable(addr: str | None) -> None:
    """Fail in one line, before starting anything, if coordd does not answer."""
    try:
        client = await AsyncClient.connect(addr, agent_id="swarm", connect_timeout=5)
    except UnavailableError:
        where = addr or os.environ.get("COORDD_ADDR") or "127.0.0.1:7420"
        raise SystemExit(
            f"swarm: could not reach coordd at {where}; start it with `coordd serve` "
            "(or pass --addr)"
        ) from None
    await client.close()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    asyncio.run(reachable(args.addr))
    with _workdir(args.workdir) as workdir:
        plan = Plan.make(args, workdir)
        print(
            f"swarm: {len(plan.docs)} documents, {plan.workers} workers, a reviewer and an "
            f"orchestrator in {plan.namespace} (seed {args.seed}); injecting "
            f"{_n(plan.crash, 'crash')}, {_n(plan.stall, 'stall')}, {_n(plan.retry, 'retry')}"
        )
        try:
            tally, restarts = asyncio.run(swarm(plan, args.seed, args.timeout))
        except UnavailableError as exc:
            print(f"swarm: coordd went away: {exc.message}", file=sys.stderr)
            return 2
        except TimeoutError:
            print(f"swarm: did not finish within {args.timeout:g}s", file=sys.stderr)
            return 1
        except WorkerFailed as exc:
            print(f"swarm: {exc} (its error is above)", file=sys.stderr)
            return 1
        figures, problems = check(plan)
        for story in stories(plan):
            print(f"  {story}")
    figures["workers restarted"] = restarts
    figures["retries sent by the orchestrator"] = tally.retries_sent
    width = max(len(k) for k in figures)
    for name, value in figures.items():
        print(f"  {name:<{width}}  {value}")
    print(f"  {'final report':<{width}}  {tally.decision}: {json.dumps(tally.report)}")
    for problem in problems:
        print(f"INVARIANT FAILED: {problem}", file=sys.stderr)
    if not problems:
        print(
            "invariants hold: every side effect ran exactly once; no document had two "
            "holders at work at once"
        )
    return 1 if problems else 0


def _n(items: frozenset[str], what: str) -> str:
    plural = {"crash": "crashes", "stall": "stalls", "retry": "retries"}[what]
    return f"{len(items)} {what if len(items) == 1 else plural}"


@contextlib.contextmanager
def _workdir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        for name in ("ledger.jsonl", "activity.jsonl"):
            (path / name).unlink(missing_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="coordd-swarm-") as tmp:
        yield Path(tmp)


if __name__ == "__main__":
    raise SystemExit(main())
