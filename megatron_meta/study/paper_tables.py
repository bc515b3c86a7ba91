"""The paper's comparisons (arXiv 2601.15236) and the study nodes whose outputs make each one.

``study plan`` lists them for any study whose run names follow ``examples/study_paper.yaml``
(``local-*``, ``global-*``, ``loo-*``, ``ablation-*``); ``study report`` writes the perplexity
table and chart, the region matrix with local/leave-one-out/metadata deltas, and the MCQ tables
(with the paper protocol's aggregation when the records carry it).
"""

from __future__ import annotations

import fnmatch
from typing import List, Sequence, Tuple

from megatron_meta.study.graph import Node

PAPER_TABLES: Tuple[Tuple[str, Tuple[str, ...]], ...] = (
    ("Perplexity, local vs global, with and without metadata (report/perplexity.md, .png)",
     ("perplexity/local-*", "perplexity/global-*")),
    ("Cross-region matrix with deltas (report/perplexity.matrix.md, .png)",
     ("perplexity/local-*", "perplexity/global-*", "perplexity/loo-*")),
    ("0.5B vs 1B (report/perplexity.md: the paper-0.5b and paper-1b rows)",
     ("perplexity/*-paper-0.5b", "perplexity/local-*-paper-1b", "perplexity/global-*-paper-1b")),
    ("Leave-one-continent-out vs global (report/perplexity.matrix.md)",
     ("perplexity/loo-*", "perplexity/global-*-paper-1b")),
    ("Metadata field ablations, each in its own format (report/perplexity.md)",
     ("perplexity/ablation-*", "perplexity/global-full-paper-1b")),
    ("MCQ accuracy: SFT models vs the instruct baseline (report/mcq.md, .png)",
     ("mcq/*", "mcq-baseline")),
)


def table_lines(nodes: Sequence[Node]) -> List[str]:
    """For each comparison, the nodes that produce it (or that none of this study does)."""
    lines = ["", "paper tables and figures -> the nodes that produce them:"]
    for title, patterns in PAPER_TABLES:
        names = [n.name for n in nodes if any(fnmatch.fnmatch(n.name, p) for p in patterns)]
        shown = ", ".join(names[:6]) + (f", ... ({len(names)} nodes)" if len(names) > 6 else "")
        lines.append(f"  {title}:\n    {shown or '(no node of this study)'}")
    return lines
