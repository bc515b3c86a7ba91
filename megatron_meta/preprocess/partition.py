"""``--partitions N --partition-index I``: part I of the corpus, as a complete output set.

Parts are contiguous ranges of the corpus's document order (the order one run writes), so the
part outputs concatenated in part order are byte for byte the one-run outputs
(:mod:`~megatron_meta.preprocess.merge`). With ``D`` documents, part ``I`` holds positions
``[I*D//N, (I+1)*D//N)``. ``D`` comes from a first pass that only reads (the same pass picks the
``--holdout-test`` documents, which needs every id anyway), so the held-out selection is the
one-run selection whatever ``N`` is. The second pass encodes only the part: with read tasks
(:mod:`~megatron_meta.preprocess.dispatch`) the workers count each task's documents in the first
pass and the second reads only the tasks that overlap the part; otherwise (NOW) this module's
:meth:`Part.select` reads up to the end of the part.

Reading is a few percent of the encoding's CPU time (``benchmarks/preprocess.md``), so the first
pass costs little below a few dozen parts. Start-up decisions (batch encoder and shared body, punkt parameters) use the corpus's first
documents, the same for every part.

Skipped records: a bad record belongs to the part of the next good document (the last part takes
those after the last document), so the parts' counts add up to the one-run counts.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from typing import Any, Dict, Iterator, List, Optional, Tuple

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.records import Document
from megatron_meta.errors import ConfigError


@dataclasses.dataclass
class Part:
    """Part ``index`` of ``count`` over a corpus of ``total`` documents."""

    index: int
    count: int
    total: int = 0

    def validate(self) -> None:
        if self.count < 1:
            raise ConfigError(f"--partitions {self.count}: must be >= 1")
        if not 0 <= self.index < self.count:
            raise ConfigError(
                f"--partition-index {self.index}: must be in [0, {self.count}) with "
                f"--partitions {self.count} (a Slurm array passes 0..N-1)"
            )

    @property
    def bounds(self) -> Tuple[int, int]:
        """``[lo, hi)`` document positions of this part."""
        return self.index * self.total // self.count, (self.index + 1) * self.total // self.count

    @property
    def last(self) -> bool:
        return self.index == self.count - 1

    def select(
        self, stream: Iterator[Document], bad: BadRecords
    ) -> Iterator[Tuple[int, Document]]:
        """``(position, doc)`` of this part; sets :attr:`skipped` when the part is done."""
        lo, hi = self.bounds
        base: Dict[str, int] = {}
        end: Optional[Dict[str, int]] = None
        self.skipped: Dict[str, int] = {}
        if hi == 0 and not self.last:  # an empty part before any document
            return
        for position, doc in enumerate(stream):
            # Counts when document p arrives include the records just before it, which are p's.
            if position == lo - 1:
                base = dict(bad.counts)
            if position == hi - 1 and not self.last:
                end = dict(bad.counts)
            if lo <= position < hi or (self.last and position >= lo):
                yield position, doc
            if end is not None:
                break
        end = dict(bad.counts) if end is None else end
        self.skipped = {
            reason: n - base.get(reason, 0)
            for reason, n in sorted(end.items())
            if n - base.get(reason, 0)
        }

    def record(self, settings: Dict[str, Any]) -> Dict[str, Any]:
        """What the manifest keeps about this part (merge checks it)."""
        lo, hi = self.bounds
        return {
            "index": self.index,
            "count": self.count,
            "first_document": lo,
            "end_document": hi,
            "total_documents": self.total,
            **settings,
        }


def fingerprint(path: str) -> str:
    """SHA-256 of a tokenizer model file (or of a Hugging Face folder's tokenizer files)."""
    digest = hashlib.sha256()
    files: List[str] = [path]
    if os.path.isdir(path):
        files = [
            os.path.join(path, name)
            for name in sorted(os.listdir(path))
            if name.startswith(("tokenizer", "special_tokens", "vocab", "merges"))
            or name.endswith(".model")
        ]
    for name in files:
        digest.update(os.path.basename(name).encode())
        with open(name, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def inputs_record(inputs: List[str]) -> List[List[Any]]:
    """``[name, bytes]`` per input: parts of one run must read the same inputs."""
    out: List[List[Any]] = []
    for path in inputs:
        size: Optional[int] = None
        if os.path.isfile(path):
            size = os.path.getsize(path)
        elif os.path.isdir(path):
            size = sum(
                os.path.getsize(os.path.join(root, f))
                for root, _, names in os.walk(path)
                for f in names
            )
        out.append([os.path.basename(path.rstrip("/")) or path, size])
    return out
