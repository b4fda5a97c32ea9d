"""LangGraph on coordd: a store (``CoorddStore``) and a checkpointer fenced by a claim on its
thread (``CoorddSaver``). Needs the ``[langgraph]`` extra: ``pip install 'coordd[langgraph]'``.

Example::

    from coordd_client.langgraph import CoorddSaver, CoorddStore

    store = CoorddStore.from_addr(agent_id="planner-1")
    saver = CoorddSaver.from_addr(agent_id="planner-1")
    graph = builder.compile(checkpointer=saver, store=store)
"""

from ._names import decode_label, encode_label
from ._saver import CoorddSaver, ThreadHeldError
from ._store import CoorddItem, CoorddSearchItem, CoorddStore

__all__ = [
    "CoorddItem",
    "CoorddSaver",
    "CoorddSearchItem",
    "CoorddStore",
    "ThreadHeldError",
    "decode_label",
    "encode_label",
]
