"""A bounded cache of text embeddings, so the same prompt is never encoded twice.

Vocabulary prompts (distractors, skill templates) and command phrases repeat for every
frame; encoding them once and keeping the vectors on the model's device is what lets
continuous mode run one vision pass per frame and nothing else. The stacked KxD tensor of a
phrase list asked for again (the same prompts every frame) is returned as is, without
re-stacking: on a GPU that is one kernel launch less per frame and stage.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, List, Sequence


class TextEmbeddingCache:
    """LRU map phrase -> embedding row, filled in batches by ``encode(list_of_missing)``."""

    def __init__(self, encode: Callable[[List[str]], Any], max_entries: int = 2048) -> None:
        self._encode = encode
        self._rows: "OrderedDict[str, Any]" = OrderedDict()
        self.max_entries = max_entries
        self.hits = 0
        self.misses = 0
        self._stacked: "OrderedDict[tuple, Any]" = OrderedDict()  # phrase tuple -> stacked rows (read-only)

    def get(self, phrases: Sequence[str]):
        """Embeddings of ``phrases`` stacked as KxD, encoding only the ones not seen before."""
        import torch

        key = tuple(phrases)
        stacked = self._stacked.get(key)
        if stacked is not None:
            self._stacked.move_to_end(key)
            self.hits += len(key)
            for phrase in key:
                self._rows.move_to_end(phrase)
            return stacked
        missing = list(dict.fromkeys(p for p in phrases if p not in self._rows))
        if missing:
            self.misses += len(missing)
            for phrase, row in zip(missing, self._encode(missing)):
                self._rows[phrase] = row
        self.hits += len(phrases) - len(missing)
        rows = []
        for phrase in phrases:
            self._rows.move_to_end(phrase)
            rows.append(self._rows[phrase])
        evicted = False
        while len(self._rows) > self.max_entries:
            self._rows.popitem(last=False)
            evicted = True
        if evicted:
            self._stacked.clear()
        stacked = torch.stack(rows)
        self._stacked[key] = stacked
        while len(self._stacked) > 32:
            self._stacked.popitem(last=False)
        return stacked

    def clear(self) -> None:
        self._rows.clear()
        self._stacked.clear()

    def __len__(self) -> int:
        return len(self._rows)
