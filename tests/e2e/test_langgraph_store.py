"""CoorddStore against a real daemon: the behaviour LangGraph's own store tests check."""

from __future__ import annotations

from datetime import timedelta

import pytest
from langgraph.store.base import (
    GetOp,
    InvalidNamespaceError,
    Item,
    ListNamespacesOp,
    MatchCondition,
    PutOp,
    SearchOp,
)

from coordd_client import Client
from coordd_client.langgraph import CoorddItem, CoorddStore
from tests.fix_db import DbClock
from tests.lg_embeddings import CharacterEmbeddings


@pytest.fixture
def store(client: Client) -> CoorddStore:
    return CoorddStore(client)


@pytest.fixture
def vstore(client: Client) -> CoorddStore:
    embeddings = CharacterEmbeddings(dims=64)
    return CoorddStore(client, root="vec", index={"dims": 64, "embed": embeddings})


def test_basic_ops_with_provenance_and_history(store: CoorddStore) -> None:
    ns = ("test", "documents")
    store.put(ns, "doc1", {"title": "Test Document", "content": "Hello, World!"})
    item = store.get(ns, "doc1")
    assert isinstance(item, CoorddItem)
    assert (item.namespace, item.key) == (ns, "doc1")
    assert item.value == {"title": "Test Document", "content": "Hello, World!"}
    assert item.provenance.agent_id == "agent-s" and item.revision > 0
    assert item.entry.namespace == "langgraph/test/documents"

    store.put(ns, "doc1", {"title": "Updated Document"})
    updated = store.get(ns, "doc1")
    assert updated is not None and updated.value == {"title": "Updated Document"}
    assert updated.updated_at > item.updated_at
    assert updated.created_at == item.created_at, "creation time survives updates"
    assert [v.value for v in store.history(ns, "doc1")][:2] == [
        {"title": "Updated Document"},
        {"title": "Test Document", "content": "Hello, World!"},
    ]
    assert store.get(("test", "other_documents"), "doc1") is None
    store.delete(ns, "doc1")
    assert store.get(ns, "doc1") is None


def test_batch_answers_in_op_order(store: CoorddStore) -> None:
    store.put(("test", "foo"), "key1", {"data": "value1"})
    store.put(("test", "bar"), "key2", {"data": "value2"})
    results = store.batch(
        [
            GetOp(("test", "foo"), "key1"),
            PutOp(("test", "bar"), "key2", {"data": "value2"}),
            SearchOp(("test",), filter={"data": "value1"}),
            ListNamespacesOp(),
            GetOp(("test",), "key3"),
            PutOp(("test",), "key4", {"data": "x"}),
            PutOp(("test",), "key4", None),  # the last put of a key wins: deleted
        ]
    )
    assert isinstance(results[0], Item) and results[0].value == {"data": "value1"}
    assert results[1] is None and results[4] is None
    assert [i.key for i in results[2]] == ["key1"]  # type: ignore[union-attr]
    assert sorted(results[3]) == [("test", "bar"), ("test", "foo")]  # type: ignore[arg-type]
    assert store.get(("test",), "key4") is None


def test_search_without_index_filters_and_pages(store: CoorddStore) -> None:
    data = [
        (("test", "docs"), "doc1", {"title": "First", "author": "Alice", "score": 2}),
        (("test", "docs"), "doc2", {"title": "Second", "author": "Bob", "score": 9}),
        (("test", "images"), "img1", {"title": "Image", "author": "Alice", "score": 10}),
        (("testing",), "other", {"author": "Alice"}),  # not under ("test",): whole labels
    ]
    for ns, key, value in data:
        store.put(ns, key, value)
    assert len(store.search(("test",))) == 3
    assert {i.key for i in store.search(("test", "docs"))} == {"doc1", "doc2"}
    assert {i.key for i in store.search(("test",), filter={"author": "Alice"})} == {
        "doc1",
        "img1",
    }
    assert {i.value["score"] for i in store.search(("test",), filter={"score": {"$gte": 9}})} == {
        9,
        10,
    }, "numbers compare as numbers, not as text"
    assert [i.key for i in store.search(("test",), filter={"title": {"$gt": "Image"}})] == ["doc2"]
    assert len(store.search(("test",), limit=2)) == 2
    assert len(store.search(("test",), offset=2)) == 1
    assert all(i.score is None for i in store.search(("test",)))


def test_list_namespaces_prefix_suffix_wildcards_depth(store: CoorddStore) -> None:
    namespaces = [
        ("a", "b", "c"),
        ("a", "b", "d", "e"),
        ("a", "b", "d", "i"),
        ("a", "b", "f"),
        ("a", "c", "f"),
        ("b", "a", "f"),
        ("users", "123"),
        ("users", "456", "settings"),
        ("admin", "users", "789"),
    ]
    for i, ns in enumerate(namespaces):
        store.put(ns, f"id_{i}", {"data": i})
    assert store.list_namespaces(prefix=("a", "b")) == [
        ("a", "b", "c"),
        ("a", "b", "d", "e"),
        ("a", "b", "d", "i"),
        ("a", "b", "f"),
    ]
    assert store.list_namespaces(suffix=("f",)) == [
        ("a", "b", "f"),
        ("a", "c", "f"),
        ("b", "a", "f"),
    ]
    assert store.list_namespaces(prefix=("a",), suffix=("f",)) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(prefix=("a", "b"), max_depth=3) == [
        ("a", "b", "c"),
        ("a", "b", "d"),
        ("a", "b", "f"),
    ]
    assert store.list_namespaces(prefix=("a", "b"), limit=2) == [
        ("a", "b", "c"),
        ("a", "b", "d", "e"),
    ]
    assert store.list_namespaces(prefix=("a", "b"), offset=2) == [
        ("a", "b", "d", "i"),
        ("a", "b", "f"),
    ]
    assert store.list_namespaces(prefix=("a", "*", "f")) == [("a", "b", "f"), ("a", "c", "f")]
    assert store.list_namespaces(suffix=("*", "f")) == [
        ("a", "b", "f"),
        ("a", "c", "f"),
        ("b", "a", "f"),
    ]
    assert store.list_namespaces(prefix=("nonexistent",)) == []
    assert store.list_namespaces(max_depth=1) == [("a",), ("admin",), ("b",), ("users",)]
    conditions = (
        MatchCondition("prefix", ("*", "users")),
        MatchCondition("suffix", ("*", "settings")),
    )
    assert store.batch([ListNamespacesOp(match_conditions=conditions)]) == [[]]


def test_labels_outside_coordd_charset_round_trip(store: CoorddStore) -> None:
    ns = ("users", "Alice Smith", "日本", "a/b")
    store.put(ns, "prefs", {"theme": "dark"})
    assert store.list_namespaces(prefix=("users",)) == [ns]
    item = store.get(ns, "prefs")
    assert item is not None and item.namespace == ns
    assert item.entry.namespace == "langgraph/users/Alice.20Smith/.E6.97.A5.E6.9C.AC/a.2Fb"
    with pytest.raises(InvalidNamespaceError, match="too long"):
        store.put(("x" * 65,), "k", {})
    with pytest.raises(InvalidNamespaceError, match="too deep"):
        store.put(tuple("abcdefg"), "k", {})
    with pytest.raises(InvalidNamespaceError):
        store.put(("a.b",), "k", {})


def test_ttl_refresh_on_read_and_expiry_by_database_clock(
    client: Client, db_clock: DbClock
) -> None:
    store = CoorddStore(client, ttl={"default_ttl": 1.0, "refresh_on_read": True})
    ns = ("foo",)
    store.put(ns, "item1", {"foo": "bar"})  # default_ttl: 1 minute
    first = store.get(ns, "item1", refresh_ttl=False)
    assert first is not None and first.expire_time is not None
    db_clock.advance(40)
    assert store.get(ns, "item1", refresh_ttl=True) is not None  # expiry pushed to now + 60 s
    db_clock.advance(40)  # 80 s after the put: alive only because the read refreshed it
    assert len(store.search(ns, refresh_ttl=True)) == 1
    db_clock.advance(40)
    assert store.get(ns, "item1", refresh_ttl=False) is not None
    db_clock.advance(25)  # 65 s after the last refresh
    assert store.search(ns, refresh_ttl=False) == []
    assert store.get(ns, "item1") is None
    store.put(ns, "forever", {"x": 1}, ttl=None)
    db_clock.advance(3600)
    assert store.get(ns, "forever") is not None


def test_vector_search_scores_updates_and_unindexed_items(vstore: CoorddStore) -> None:
    docs = [
        ("doc1", {"text": "short text"}),
        ("doc2", {"text": "longer text document"}),
        ("doc3", {"text": "longest text document here"}),
        ("doc4", {"description": "text in description field"}),
    ]
    for key, value in docs:
        vstore.put(("test",), key, value)
    found = vstore.search(("test",), query="long text")
    assert {"doc2", "doc3"} <= {r.key for r in found}
    assert all(r.score is not None for r in found)
    assert [r.score for r in found] == sorted((r.score or 0 for r in found), reverse=True)

    vstore.put(("test",), "z1", {"text": "zany zebra Xerxes"})
    before = vstore.search(("test",), query="zany zebra Xerxes")[0]
    assert before.key == "z1"  # the default field "$" embeds the whole value as JSON
    vstore.put(("test",), "z1", {"text": "new text about dogs"})
    after = {r.key: r.score for r in vstore.search(("test",), query="zany zebra Xerxes", limit=10)}
    assert (after.get("z1") or 0.0) < (before.score or 0.0)
    vstore.put(("test",), "unindexed", {"text": "zany zebra Xerxes"}, index=False)
    assert "unindexed" not in {r.key for r in vstore.search(("test",), query="zany zebra Xerxes")}
    assert vstore.get(("test",), "unindexed") is not None


def test_vector_search_with_filters_and_pages(vstore: CoorddStore) -> None:
    docs = [
        ("doc1", {"text": "red apple", "color": "red", "score": 4.5}),
        ("doc2", {"text": "red car", "color": "red", "score": 3.0}),
        ("doc3", {"text": "green apple", "color": "green", "score": 4.0}),
        ("doc4", {"text": "blue car", "color": "blue", "score": 3.5}),
    ]
    for key, value in docs:
        vstore.put(("test",), key, value)
    red_apple = vstore.search(("test",), query="red apple", filter={"color": "red"})
    assert [r.key for r in red_apple] == ["doc1", "doc2"]
    red_car = vstore.search(("test",), query="red car", filter={"color": "red"})
    assert [r.key for r in red_car] == ["doc2", "doc1"]
    assert {
        r.key for r in vstore.search(("test",), query="apple", filter={"score": {"$gt": 3.2}})
    } == {"doc1", "doc3", "doc4"}
    multi = vstore.search(
        ("test",), query="apple", filter={"score": {"$gte": 4.0}, "color": "green"}
    )
    assert [r.key for r in multi] == ["doc3"]
    page1 = vstore.search(("test",), query="apple", limit=2)
    page2 = vstore.search(("test",), query="apple", limit=2, offset=2)
    assert len(page1) == len(page2) == 2 and not {r.key for r in page1} & {r.key for r in page2}
    assert len(vstore.search(("test",), query="", limit=10)) == 4


def test_each_indexed_field_is_its_own_vector(client: Client) -> None:
    store = CoorddStore(
        client,
        root="paths",
        index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["key0", "key1", "key3"]},
    )
    store.put(("test",), "doc1", {"key1": "xxx", "key2": "yyy", "key3": "zzz"})
    store.put(("test",), "doc2", {"key0": "uuu", "key1": "vvv", "key2": "www", "key3": "xxx"})
    both = store.search(("test",), query="xxx")
    assert len(both) == 2 and both[0].score == pytest.approx(both[1].score, abs=1e-3)
    assert store.search(("test",), query="uuu")[0].key == "doc2"
    assert store.search(("test",), query="zzz")[0].key == "doc1"
    # per-put fields override the store's
    store.put(("test",), "doc3", {"key5": "qqq", "key6": "rrr"}, index=["key5"])
    top = store.search(("test",), query="qqq")[0]
    assert top.key == "doc3" and top.score == pytest.approx(1.0, abs=1e-3)
    # fewer vectors after an update: the stale ones are gone from search
    store.put(("test",), "doc2", {"key0": "uuu"})
    assert store.search(("test",), query="xxx")[0].key == "doc1"
    assert store.search(("test",), query="xxx", limit=5)[-1].score < 0.99  # type: ignore[operator]
    # a vector left over from an older version (its writer died before dropping it) is ignored
    client.memory.put(
        "paths/test/.v",
        "doc2#5",
        {"key": "doc2", "path": "key3"},
        text="xxx",
        embedding=CharacterEmbeddings(64).embed_query("xxx"),
    )
    scores = {r.key: r.score for r in store.search(("test",), query="xxx", limit=5)}
    assert scores["doc1"] == pytest.approx(1.0, abs=1e-3) and scores["doc2"] < 0.99  # type: ignore[operator]
    store.delete(("test",), "doc1")
    assert "doc1" not in {r.key for r in store.search(("test",), query="xxx", limit=5)}


async def test_async_store_on_an_async_client(connect) -> None:
    client = await connect("agent-async")
    store = CoorddStore(
        client, index={"dims": 64, "embed": CharacterEmbeddings(64), "fields": ["text"]}
    )
    await store.aput(("a", "b"), "k", {"text": "hello world"})
    item = await store.aget(("a", "b"), "k")
    assert item is not None and item.value == {"text": "hello world"}
    hits = await store.asearch(("a",), query="hello world")
    assert hits[0].key == "k" and hits[0].score == pytest.approx(1.0, abs=1e-3)
    assert await store.alist_namespaces() == [("a", "b")]
    await store.adelete(("a", "b"), "k")
    assert await store.aget(("a", "b"), "k") is None
    with pytest.raises(RuntimeError, match="async methods"):
        store.get(("a", "b"), "k")


def test_from_addr_uses_coordd_addr(daemon, monkeypatch) -> None:
    monkeypatch.setenv("COORDD_ADDR", daemon.address)
    with CoorddStore.from_addr(
        agent_id="from-addr", ttl={"default_ttl": timedelta(minutes=5).total_seconds() / 60}
    ) as store:
        store.put(("x",), "k", {"v": 1})
        item = store.get(("x",), "k")
        assert item is not None and item.provenance.agent_id == "from-addr"
        assert item.expire_time is not None


def test_a_langgraph_graph_remembers_through_the_store(store: CoorddStore) -> None:
    from typing import TypedDict

    from langgraph.graph import END, START, StateGraph
    from langgraph.store.base import BaseStore

    class State(TypedDict):
        user: str
        fact: str
        recalled: list[str]

    def remember(state: State, *, store: BaseStore) -> dict[str, list[str]]:
        ns = ("memories", state["user"])
        store.put(ns, f"fact-{len(store.search(ns))}", {"fact": state["fact"]})
        return {"recalled": sorted(i.value["fact"] for i in store.search(ns))}

    builder = StateGraph(State)
    builder.add_node("remember", remember)
    builder.add_edge(START, "remember")
    builder.add_edge("remember", END)
    graph = builder.compile(store=store)
    graph.invoke({"user": "u1", "fact": "likes tea", "recalled": []})
    out = graph.invoke({"user": "u1", "fact": "lives in Lyon", "recalled": []})
    assert out["recalled"] == ["likes tea", "lives in Lyon"]
    assert store.list_namespaces(prefix=("memories",)) == [("memories", "u1")]
