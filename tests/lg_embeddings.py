"""A deterministic embedding for LangGraph tests: character frequencies, randomly projected.

Like LangGraph's own test embeddings, texts sharing characters land close together; each
character's projection is seeded by the character itself, so results never depend on order.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from functools import cache

from langchain_core.embeddings import Embeddings


class CharacterEmbeddings(Embeddings):
    def __init__(self, dims: int = 64) -> None:
        self.dims = dims

    @cache  # noqa: B019 - a handful of characters, kept for the test session
    def _projection(self, char: str) -> tuple[float, ...]:
        rng = random.Random(ord(char))
        return tuple(rng.gauss(0, 1 / math.sqrt(self.dims)) for _ in range(self.dims))

    def embed_query(self, text: str) -> list[float]:
        counts = Counter(text)
        total = sum(counts.values())
        vector = [0.0] * self.dims
        for char, count in counts.items():
            for i, p in enumerate(self._projection(char)):
                vector[i] += count / total * p
        norm = math.sqrt(sum(x * x for x in vector))
        return [x / norm for x in vector] if norm else vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self.embed_query(t) for t in texts]

    def __hash__(self) -> int:
        return hash(self.dims)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, CharacterEmbeddings) and other.dims == self.dims
