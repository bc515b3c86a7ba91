"""Shared-body encoding: a document cut into pieces as its :class:`SharePlan` allows (worker side).

The body (the document's first sequence: ``TITLE: ...`` or ``CONTENT: ...``) is encoded once for
all variants; each variant's metadata block is cut into ``NAME: value\\n`` lines (and, for GPT-2's
regex, the blank line on its own), encoded in one batch call a chunk. Country and continent lines
take few values and are cached. Why each family's cuts are exact is in
:mod:`megatron_meta.tokenizer.proofs`.

With a sentinel ``context`` (SentencePiece's dummy prefix) a piece that does not start the document
is encoded behind the sentinel, whose ids are then stripped. The body then has two encodings: behind
a metadata block, and at the start of the text (variant ``none``). It is cut after its first line
(the title) so only that short head is encoded twice.
"""

from __future__ import annotations

from typing import Callable, Dict, List, Sequence, Tuple

import numpy as np

from megatron_meta.corpora.records import Document
from megatron_meta.metadata.formatting import VARIANTS, url_domain
from megatron_meta.tokenizer.proofs import SharePlan

EMPTY = np.zeros(0, dtype=np.int32)
# (behind the sentinel?, text)
Piece = Tuple[bool, str]


def _join(parts: Sequence[np.ndarray]) -> np.ndarray:
    if len(parts) == 1:
        return parts[0]
    return np.concatenate(parts) if parts else EMPTY


class PieceEncoder:
    """Encodes metadata blocks and bodies as separate pieces under one :class:`SharePlan`."""

    def __init__(
        self, plan: SharePlan, encode_batch: Callable[[List[str]], List[np.ndarray]], url_form: str
    ) -> None:
        self.plan = plan
        self.encode_batch = encode_batch
        self.url_form = url_form
        self._context_ids = encode_batch([plan.context])[0] if plan.context else EMPTY
        self._cache: Dict[Piece, np.ndarray] = {}

    def _values(self, doc: Document) -> Dict[str, str]:
        url = url_domain(doc.url) if self.url_form == "domain" else doc.url
        return {"URL": url, "COUNTRY": doc.country, "CONTINENT": doc.continent}

    def guarded(self, doc: Document, variants: Sequence[str]) -> bool:
        """True when the plan's cuts are not exact for ``doc`` (it is then encoded whole)."""
        if not self.plan.guard_values:
            return False
        values = self._values(doc)
        used = {name for v in variants for name in VARIANTS[v]}
        return any(not values[name] or values[name][-1].isspace() for name in used)

    def encode(self, texts: List[str], behind: bool) -> List[np.ndarray]:
        """ids of ``texts``; ``behind``: as they are encoded after a newline, not at the start."""
        if not texts:
            return []
        if not (behind and self.plan.context):
            return self.encode_batch(texts)
        n = len(self._context_ids)
        out = []
        for ids in self.encode_batch([self.plan.context + t for t in texts]):
            if not np.array_equal(ids[:n], self._context_ids):
                raise RuntimeError(
                    f"the {self.plan.family} sentinel did not encode as itself; please report"
                )
            out.append(ids[n:])
        return out

    # -- bodies ------------------------------------------------------------------------------
    def bodies(
        self, texts: List[str], behind: bool, at_start: bool
    ) -> Dict[str, List[np.ndarray]]:
        """ids of each body: ``"after"`` a metadata block and/or at the ``"start"`` of a text."""
        if not self.plan.context:
            ids = self.encode_batch(texts) if texts else []
            return {"after": ids, "start": ids}
        heads: List[str] = []
        tails: List[str] = []
        for text in texts:
            cut = text.find("\n") + 1 or len(text)  # after the first newline (atomic)
            heads.append(text[:cut])
            tails.append(text[cut:])
        tail_ids = [EMPTY] * len(tails)
        todo = [k for k, t in enumerate(tails) if t]
        for k, ids in zip(todo, self.encode([tails[k] for k in todo], behind=True)):
            tail_ids[k] = ids
        out: Dict[str, List[np.ndarray]] = {}
        for key, wanted, is_behind in (("after", behind, True), ("start", at_start, False)):
            if wanted:
                heads_ids = self.encode(heads, behind=is_behind)
                out[key] = [_join([h, t]) if len(t) else h for h, t in zip(heads_ids, tail_ids)]
        return out

    # -- metadata blocks ---------------------------------------------------------------------
    def _pieces(self, doc: Document, variant: str) -> List[Piece]:
        fields = VARIANTS[variant]
        if not fields:
            return []
        values = self._values(doc)
        lines = [f"{name}: {values[name]}\n" for name in fields]
        if self.plan.split_blank_line:
            lines.append("\n")
        else:
            lines[-1] += "\n"
        sentinel = bool(self.plan.context)
        return [(sentinel and i > 0, line) for i, line in enumerate(lines)]

    def prefixes(
        self, docs: Sequence[Document], variants: Sequence[str]
    ) -> Dict[str, List[np.ndarray]]:
        """Per variant, the ids of each document's metadata block (blank line included)."""
        pieces = {v: [self._pieces(doc, v) for doc in docs] for v in variants}
        table = self._piece_ids([p for per_doc in pieces.values() for ps in per_doc for p in ps])
        return {
            v: [_join([table[p] for p in ps]) for ps in pieces[v]] for v in variants
        }

    def _piece_ids(self, pieces: List[Piece]) -> Dict[Piece, np.ndarray]:
        """ids of pieces, one batch call per kind for those not cached.

        COUNTRY/CONTINENT lines take few values and stay cached; URL lines are unique per
        document and are kept only for the chunk at hand.
        """
        table: Dict[Piece, np.ndarray] = {}
        missing: Dict[bool, List[str]] = {False: [], True: []}
        for piece in pieces:
            if piece in table:
                continue
            cached = self._cache.get(piece)
            table[piece] = cached
            if cached is None:
                missing[piece[0]].append(piece[1])
        if len(self._cache) > 100_000:  # only reachable with unusual metadata values
            self._cache.clear()
        for behind, texts in missing.items():
            for text, ids in zip(texts, self.encode(texts, behind)):
                table[(behind, text)] = ids
                if not text.startswith("URL: "):
                    self._cache[(behind, text)] = ids
        return table
