"""Vector search through the API: recall against brute force, filters, concurrency, restart."""

from __future__ import annotations

import asyncio
from pathlib import Path

import grpc
import numpy as np
import pytest

from coordd import rpc_status
from coordd_client import AsyncClient, EntryRef, InvalidArgumentError

NS = "acme/kb"
# Sized to measure recall against brute force in seconds on 2 busy cores (20,000 x 128 took
# minutes there): 3,000 vectors in 200 clusters leave a query's ten nearest among about fifteen
# close rivals, and the 10% filter leaves 300 candidates, so an index that misses writes or a
# filter applied after ranking shows as lost hits. Scale and speed are `python -m bench memory`.
DIM = 32
N = 3_000


def clustered(n: int, dim: int, seed: int) -> np.ndarray:
    """200 Gaussian clusters (sigma 0.35), as in the anchors' hnswlib/pgvector comparison."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(200, dim)).astype(np.float32)
    data = centres[rng.integers(0, 200, n)] + 0.35 * rng.normal(size=(n, dim)).astype(np.float32)
    return data.astype(np.float32)


def queries_near(data: np.ndarray, n: int, seed: int) -> np.ndarray:
    """Queries from the data's own distribution: data points moved by a little noise."""
    rng = np.random.default_rng(seed)
    picked = data[rng.integers(0, len(data), n)]
    return (picked + 0.05 * rng.normal(size=picked.shape)).astype(np.float32)


def exact_top(data: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> set[int]:
    unit = data[ids] / np.linalg.norm(data[ids], axis=1, keepdims=True)
    dist = 1 - unit @ (q / np.linalg.norm(q))
    return {int(ids[i]) for i in np.argsort(dist)[:k]}


async def ingest(client: AsyncClient, data: np.ndarray, start: int, keep: set[int]) -> None:
    queue = list(range(start, start + len(data)))

    async def worker() -> None:
        while queue:
            i = queue.pop()
            await client.memory.put(
                NS,
                f"v{i}",
                {"i": i},
                embedding=data[i - start].tolist(),
                tags=["keep"] if i in keep else [],
                tier="episodic",
            )

    await asyncio.gather(*(worker() for _ in range(32)))


@pytest.fixture(scope="module")
def dataset() -> tuple[np.ndarray, set[int], np.ndarray]:
    data = clustered(N, DIM, seed=1)
    keep = set(range(0, N, 10))  # a tag on 10% of entries
    queries = queries_near(data, 60, seed=2)
    return data, keep, queries


async def test_recall_with_and_without_a_ten_percent_filter(daemon, dataset) -> None:
    data, keep, queries = dataset
    # The first search must reflect every write just made (read-your-writes): it may wait for
    # the index to catch up, longer than the client's default 10 s deadline on a slow run.
    client = await AsyncClient.connect(daemon.address, agent_id="indexer", timeout=60)
    await ingest(client, data, 0, keep)
    all_ids = np.arange(N)
    keep_ids = np.array(sorted(keep))
    recall_all = recall_keep = 0.0
    for q in queries:
        hits = await client.memory.search(q.tolist(), 10, NS)
        got = {int(h.entry.key[1:]) for h in hits}
        assert len(got) == 10
        recall_all += len(got & exact_top(data, all_ids, q, 10)) / 10
        kept = await client.memory.search(q.tolist(), 10, NS, tags=["keep"])
        got_keep = {int(h.entry.key[1:]) for h in kept}
        assert len(got_keep) == 10 and got_keep <= keep, "a filtered-out entry was returned"
        assert all("keep" in h.entry.tags for h in kept)
        recall_keep += len(got_keep & exact_top(data, keep_ids, q, 10)) / 10
        assert [h.distance for h in hits] == sorted(h.distance for h in hits)
    recall_all /= len(queries)
    recall_keep /= len(queries)
    await client.close()
    print(f"recall@10 {recall_all:.3f}, filtered {recall_keep:.3f}")
    assert recall_all >= 0.95
    assert recall_keep >= 0.95


def _public_reader_policy(tmp_path: Path) -> Path:
    """Role "writer" reads and writes everything; role "reader" reads kb/public only."""
    from tests.fix_daemon import write_policy

    return write_policy(
        tmp_path,
        '[[grants]]\nrole = "writer"\nnamespaces = ["**"]\noperations = ["read", "write"]\n'
        '[[grants]]\nrole = "reader"\nnamespaces = ["kb/public/**", "kb/public"]\n'
        'operations = ["read"]\n',
    )


async def test_grants_filter_before_ranking(start_daemon, tmp_path) -> None:
    d = start_daemon(policy_file=_public_reader_policy(tmp_path))
    async with (
        await AsyncClient.connect(d.address, agent_id="w", role="writer") as writer,
        await AsyncClient.connect(d.address, agent_id="r", role="reader") as reader,
    ):
        rng = np.random.default_rng(3)
        target = rng.normal(size=16)
        for i in range(30):  # the secret entries are the nearest ones
            await writer.memory.put("kb/secret", f"s{i}", i, embedding=(target + 0.01 * i).tolist())
        for i in range(30):
            await writer.memory.put("kb/public", f"p{i}", i, embedding=rng.normal(size=16).tolist())
        # The reader learns the writer's revisions (as a context entry would carry them), so
        # its search reflects every write above, not whatever the index had caught up with.
        reader.session.merge(writer.session.vector)
        hits = await reader.memory.search(target.tolist(), 10, "kb")
        assert len(hits) == 10, "k results when k readable entries match"
        assert all(h.entry.namespace == "kb/public" for h in hits)


async def test_searches_during_ingest_fail_nothing_and_recall_holds(connect) -> None:
    """hnswlib is not safe for concurrent add and query: the daemon must serialize them."""
    writer = await connect("writer")
    readers = [await connect(f"reader{i}") for i in range(3)]
    data = clustered(4_000, DIM, seed=4)
    planned = 1_500
    written = 0
    writing = True
    errors: list[BaseException] = []
    searches = [0] * len(readers)

    async def write() -> None:
        nonlocal written, writing
        # Write the planned entries, and go on until every reader has searched a few times
        # while writes were in flight (so the overlap is certain, however the load falls).
        while written < len(data) and (written < planned or min(searches) < 5):
            batch = range(written, min(written + 16, len(data)))
            await asyncio.gather(
                *(
                    writer.memory.put("acme/live", f"v{i}", i, embedding=data[i].tolist())
                    for i in batch
                )
            )
            written = batch[-1] + 1
        writing = False

    async def read(n: int, client: AsyncClient) -> None:
        rng = np.random.default_rng(n)
        while writing:
            try:
                await client.memory.search(
                    data[rng.integers(0, len(data))].tolist(), 10, "acme/live"
                )
                searches[n] += 1
            except BaseException as exc:
                errors.append(exc)
                return

    await asyncio.gather(write(), *(read(n, c) for n, c in enumerate(readers)))
    assert not errors, errors[:3]
    assert written >= planned and min(searches) >= 5
    # Recall holds on what was written (the index caught up with every write).
    ids = np.arange(written)
    recall = 0.0
    rng = np.random.default_rng(5)
    for q in data[rng.integers(0, written, 30)]:
        hits = await writer.memory.search(q.tolist(), 10, "acme/live")
        recall += len({int(h.entry.key[1:]) for h in hits} & exact_top(data, ids, q, 10)) / 10
    print(f"wrote {written}, searched {searches} times, recall@10 {recall / 30:.3f}")
    assert recall / 30 >= 0.95


async def test_entries_and_results_identical_after_restart(start_daemon, tmp_path) -> None:
    data = clustered(1000, 32, seed=6)
    queries = queries_near(data, 10, seed=7)
    first = start_daemon(index_dir=tmp_path / "index")
    async with await AsyncClient.connect(first.address, agent_id="a") as c:
        await ingest_ns(c, data)
        before = [
            [
                (h.entry.key, round(h.distance, 5))
                for h in await c.memory.search(q.tolist(), 10, "acme/restart")
            ]
            for q in queries
        ]
        entry_before = await c.memory.get("acme/restart", "v7")
    first.stop()
    second = start_daemon(index_dir=tmp_path / "index")
    async with await AsyncClient.connect(second.address, agent_id="a") as c:
        after = [
            [
                (h.entry.key, round(h.distance, 5))
                for h in await c.memory.search(q.tolist(), 10, "acme/restart")
            ]
            for q in queries
        ]
        entry_after = await c.memory.get("acme/restart", "v7")
    assert after == before
    assert entry_after == entry_before
    assert (tmp_path / "index" / "meta.pickle").exists()


async def ingest_ns(client: AsyncClient, data: np.ndarray) -> None:
    async def put(i: int) -> None:
        await client.memory.put("acme/restart", f"v{i}", i, embedding=data[i].tolist())

    for start in range(0, len(data), 64):
        await asyncio.gather(*(put(i) for i in range(start, min(start + 64, len(data)))))


async def test_hits_are_the_version_the_index_holds_never_an_older_or_expired_one(
    connect, db_clock
) -> None:
    """Hits come from a cache of hydrated entries, good for one revision each; entries with an
    expiry are checked against the database clock on every search."""
    a = await connect("a")
    near = [1.0, 0.0, 0.0, 0.0]
    await a.memory.put(NS, "fact", {"v": 1}, embedding=near)
    await a.memory.put(NS, "brief", {"v": 1}, embedding=[0.9, 0.1, 0.0, 0.0], ttl=60)
    await a.memory.put(NS, "far", {"v": 1}, embedding=[0.0, 0.0, 1.0, 0.0])
    hits = await a.memory.search(near, 3, NS)
    assert [(h.entry.key, h.entry.value) for h in hits][:2] == [
        ("fact", {"v": 1}),
        ("brief", {"v": 1}),
    ]
    await a.memory.put(NS, "fact", {"v": 2}, embedding=near)  # a new revision, same vector
    hits = await a.memory.search(near, 3, NS)
    assert hits[0].entry.value == {"v": 2} and hits[0].entry.revision == a.session.revision(NS)
    db_clock.advance(61)  # "brief" expires; nothing was written, the index's clock is older
    hits = await a.memory.search(near, 3, NS)
    assert [h.entry.key for h in hits] == ["fact", "far"]
    await a.memory.delete(NS, "fact")
    hits = await a.memory.search(near, 3, NS)
    assert [h.entry.key for h in hits] == ["far"]


async def test_the_ref_view_finds_what_the_entry_view_finds(
    start_daemon, tmp_path, db_clock
) -> None:
    """SEARCH_VIEW_REF (``search_refs``) answers from the index without reading values, yet
    gives the same hits as the full view: same grants, same expiry by the database clock."""
    d = start_daemon(policy_file=_public_reader_policy(tmp_path))
    async with (
        await AsyncClient.connect(d.address, agent_id="w", role="writer") as writer,
        await AsyncClient.connect(d.address, agent_id="r", role="reader") as reader,
    ):
        near = np.array([1.0, 0.0, 0.0, 0.0], dtype=np.float32)
        await writer.memory.put("kb/secret", "nearest", 1, embedding=near.tolist())
        await writer.memory.put("kb/public", "fact", 1, embedding=[0.95, 0.05, 0.0, 0.0])
        await writer.memory.put("kb/public", "fact", 2, embedding=[0.95, 0.05, 0.0, 0.0])
        await writer.memory.put("kb/public", "brief", 1, embedding=[0.9, 0.1, 0.0, 0.0], ttl=60)
        await writer.memory.put("kb/public", "far", 1, embedding=[0.0, 0.0, 1.0, 0.0])
        reader.session.merge(writer.session.vector)

        async def both() -> list[tuple[str, str, int, float]]:
            full = await reader.memory.search(near, 10, "kb")  # type: ignore[arg-type]
            refs = await reader.memory.search_refs(near, 10, "kb")  # type: ignore[arg-type]
            as_full = [(h.entry.namespace, h.entry.key, h.entry.revision, h.distance) for h in full]
            as_refs = [(h.namespace, h.key, h.revision, h.distance) for h in refs]
            assert [h.ref for h in refs] == [
                EntryRef(namespace=ns, key=key, revision=rev) for ns, key, rev, _ in as_full
            ]
            assert as_refs == as_full
            return as_refs

        found = await both()
        assert [(ns, key) for ns, key, _, _ in found] == [
            ("kb/public", "fact"),
            ("kb/public", "brief"),
            ("kb/public", "far"),
        ]
        assert found[0][2] == writer.session.revision("kb/public") - 2, "fact's second version"
        db_clock.advance(61)  # "brief" expires; nothing was written, the index's clock is older
        assert [key for _, key, _, _ in await both()] == ["fact", "far"]


async def test_a_packed_embedding_searches_as_the_numbers_do(daemon) -> None:
    from coordd.v1 import memory_service_pb2 as pb
    from coordd.v1 import memory_service_pb2_grpc as pb_grpc

    async with await AsyncClient.connect(daemon.address, agent_id="a") as a:
        data = clustered(50, 8, seed=8)
        for i, v in enumerate(data):
            await a.memory.put("acme/packed", f"v{i}", i, embedding=v.tolist())
        q = queries_near(data, 1, seed=9)[0]
        as_list = await a.memory.search(q.tolist(), 5, "acme/packed")
        as_array = await a.memory.search(q, 5, "acme/packed")  # type: ignore[arg-type]
        as_f64 = await a.memory.search(q.astype(np.float64), 5, "acme/packed")  # type: ignore[arg-type]
        assert [h.entry.key for h in as_array] == [h.entry.key for h in as_list]
        assert [h.entry.key for h in as_f64] == [h.entry.key for h in as_list]

    channel = grpc.aio.insecure_channel(daemon.address)
    stub = pb_grpc.MemoryServiceStub(channel)
    meta = (("coordd-agent-id", "a"),)
    q32 = q.astype("<f4")
    # The repeated field alone (older clients) still works.
    old = await stub.SearchMemory(
        pb.SearchMemoryRequest(embedding=q.tolist(), k=5, namespace_prefixes=["acme/packed"]),
        metadata=meta,
    )
    assert [h.entry.key for h in old.hits] == [h.entry.key for h in as_list]
    bad = [
        (pb.SearchMemoryRequest(embedding=q.tolist(), embedding_f32=q32.tobytes()), "not both"),
        (pb.SearchMemoryRequest(embedding_f32=q32.tobytes()[:-1]), "4 bytes per dimension"),
        (pb.SearchMemoryRequest(embedding_f32=np.full(8, np.nan, "<f4").tobytes()), "finite"),
        (pb.SearchMemoryRequest(embedding_f32=q32.tobytes(), view=7), "SEARCH_VIEW_REF"),  # type: ignore[arg-type]
    ]
    try:
        for request, says in bad:
            request.k = 5
            request.namespace_prefixes.append("acme/packed")
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await stub.SearchMemory(request, metadata=meta)
            assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            decoded = rpc_status.from_rpc_error(err.value)
            assert isinstance(decoded, InvalidArgumentError)
            field = {"SEARCH_VIEW_REF": "view", "finite": "embedding"}.get(says, "embedding_f32")
            assert [v.field for v in decoded.violations] == [field]
            assert says in decoded.violations[0].description
    finally:
        await channel.close()


async def test_prefixes_match_whole_segments_and_follow_namespaces_as_they_come_and_go(
    start_daemon, tmp_path
) -> None:
    """The namespaces under a prefix are whole segments ("kb/public" holds "kb/public/sub",
    not "kb/publicity" nor "kb/public-x"), grants still filter before ranking, and a namespace
    whose last entry goes leaves the search until an entry comes back."""
    d = start_daemon(policy_file=_public_reader_policy(tmp_path))
    async with (
        await AsyncClient.connect(d.address, agent_id="w", role="writer") as writer,
        await AsyncClient.connect(d.address, agent_id="r", role="reader") as reader,
    ):
        near = [1.0, 0.0, 0.0, 0.0]
        # The neighbours outside the prefix are the nearest: a search that let them in would
        # rank them first.
        for i, ns in enumerate(["kb/publicity", "kb/public-x", "kb/public.y", "kb/pub"]):
            await writer.memory.put(ns, "k", i, embedding=[1.0, 0.001 * i, 0.0, 0.0])
        for i, ns in enumerate(["kb/public", "kb/public/sub", "kb/public/sub/deep"]):
            await writer.memory.put(ns, "k", i, embedding=[1.0, 0.1 + 0.1 * i, 0.0, 0.0])
        inside = ["kb/public", "kb/public/sub", "kb/public/sub/deep"]

        async def found(client: AsyncClient, prefix: str) -> list[str]:
            client.session.merge(writer.session.vector)
            return [h.entry.namespace for h in await client.memory.search(near, 10, prefix)]

        assert await found(writer, "kb/public") == inside
        assert await found(reader, "kb/public") == inside
        assert await found(reader, "kb") == inside, "grants filter before ranking"
        assert await found(writer, "kb/public/sub") == inside[1:]
        assert await found(writer, "kb/pub") == ["kb/pub"]

        await writer.memory.delete("kb/public/sub", "k")  # the namespace's last entry
        assert await found(reader, "kb/public") == ["kb/public", "kb/public/sub/deep"]
        assert await found(writer, "kb/public/sub") == ["kb/public/sub/deep"]
        await writer.memory.put("kb/public/sub", "again", 9, embedding=[1.0, 0.15, 0.0, 0.0])
        assert await found(reader, "kb/public") == inside
