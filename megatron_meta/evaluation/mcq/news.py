"""A localized multiple-choice set built from the held-out news documents of a manifest.

The paper's benchmark (``qa_metacul.jsonl``) is published by its authors and is the user's to
bring; a demo or a test needs a set that any clone can build. One question per held-out test
headline: in which country is the outlet that published it based? The right answer is the
outlet's country (as the corpus maps it), the three distractors are other countries of the same
held-out documents, and the option order is shuffled, all drawn with ``--seed``; a capped set
(``--max-questions``) takes the countries in turn, so its answers are spread evenly. The file is in
the benchmark's own JSONL format (question, options, correct_answer, distractors, country,
continent, generated_by), so ``evaluate mcq``, ``evaluate lm-eval-task`` and the report read it
as they read the paper's. The documents were excluded from every training shard.
"""

from __future__ import annotations

import json
import os
import random
from typing import Dict, List

from megatron_meta.corpora.records import read_documents
from megatron_meta.errors import DataError
from megatron_meta.manifest import load_manifest
from megatron_meta.metadata.regions import country_name

GENERATED_BY = "megatron-meta evaluate make-mcq (held-out news headlines)"
QUESTION = 'In which country is the news outlet that published the headline "{title}" based?'


def news_questions(manifest_path: str, max_questions: int | None = None,
                   seed: int = 42) -> List[Dict[str, object]]:
    """Benchmark records from the manifest's held-out test documents (seeded, file order)."""
    manifest = load_manifest(manifest_path)
    tests = [h for h in manifest.holdout if h.split == "test"]
    if not tests:
        raise DataError(f"{manifest_path}: no held-out test documents; preprocess with "
                        "--holdout-test N to build an MCQ set from them")
    docs = [d for h in tests for d in read_documents(h.path) if d.title.strip()]
    countries = sorted({d.country for d in docs})
    if len(countries) < 4:
        raise DataError(f"{manifest_path}: the held-out documents come from {len(countries)} "
                        "countries; four options need at least 4")
    rng = random.Random(seed)
    if max_questions is not None and max_questions < len(docs):
        docs = [docs[i] for i in balanced_sample([d.country for d in docs], max_questions, rng)]
    records = []
    for doc in docs:
        right = country_name(doc.country)
        wrong = [country_name(c) for c in rng.sample([c for c in countries if c != doc.country], 3)]
        options = [right, *wrong]
        rng.shuffle(options)
        records.append({
            "question": QUESTION.format(title=" ".join(doc.title.split())),
            "options": options, "correct_answer": right, "distractors": wrong,
            "country": right, "continent": doc.continent.lower(), "generated_by": GENERATED_BY,
        })
    return records


def balanced_sample(countries: List[str], n: int, rng: random.Random) -> List[int]:
    """``n`` indices (in file order) taking the countries in turn, each country's documents in a
    seeded order: a capped set whose answers are as even across countries as the documents allow
    (drawn at random, a news corpus's largest country would be the answer to a third of the
    questions, and a model biased towards that name would score above chance)."""
    groups: Dict[str, List[int]] = {}
    for i, c in enumerate(countries):
        groups.setdefault(c, []).append(i)
    queues = []
    for c in sorted(groups):
        members = groups[c][:]
        rng.shuffle(members)
        queues.append(members)
    chosen: List[int] = []
    while len(chosen) < n:
        for q in queues:
            if q and len(chosen) < n:
                chosen.append(q.pop())
    return sorted(chosen)


def write_news_mcq(manifest_path: str, output: str, max_questions: int | None = None,
                   seed: int = 42) -> int:
    """Write the set to ``output`` (temporary name, then rename); returns the question count."""
    records = news_questions(manifest_path, max_questions, seed)
    os.makedirs(os.path.dirname(os.path.abspath(output)), exist_ok=True)
    tmp = output + ".tmp"
    with open(tmp, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")
    os.replace(tmp, output)
    return len(records)
