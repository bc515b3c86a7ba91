"""The localized multiple-choice benchmark: reading it, and the authors' prompts.

One JSON object a line with ``question``, ``options`` (display order A-D), ``correct_answer``
(verbatim one of the options), ``country`` (a name as the question generator wrote it, normalized
here: "USA" = "United States" = ``us``) and ``continent``. Bad lines are errors that name the file
and line; every bad line is reported, and nothing is scored, so that no partial result passes for
a full one.
"""

from __future__ import annotations

import dataclasses
import json
from typing import List, Sequence

from megatron_meta.errors import DataError
from megatron_meta.metadata.regions import RegionTable
from megatron_meta.metadata.synthetic import NO_METADATA_PREFIX, facts_prefix

LETTERS = "ABCD"


@dataclasses.dataclass(frozen=True)
class Question:
    """One benchmark question, with its country normalized."""

    index: int
    """0-based position in the file (the record key of results)."""
    question: str
    options: tuple
    """Answer strings in display order."""
    answer: int
    """Index of the correct option."""
    country: str
    """Lowercase country code (``ng``)."""
    continent: str
    """Continent as the region table names it (``Africa``)."""

    def shuffled(self, rng) -> "Question":
        """The same question with its options in a random order (the answer index follows)."""
        order = list(range(len(self.options)))
        rng.shuffle(order)
        return dataclasses.replace(self, options=tuple(self.options[i] for i in order),
                                   answer=order.index(self.answer))


def read_benchmark(path: str, regions: RegionTable | None = None) -> List[Question]:
    """All questions of ``path``; a :class:`DataError` listing every bad line otherwise."""
    regions = regions or RegionTable.default()
    questions: List[Question] = []
    problems: List[str] = []
    try:
        with open(path, encoding="utf-8") as f:
            lines = f.readlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"--benchmark {path}: cannot read ({e})") from e
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{lineno}"
        try:
            rec = json.loads(line)
        except json.JSONDecodeError as e:
            problems.append(f"{where}: invalid JSON ({e.msg})")
            continue
        problem = _check(rec)
        if problem:
            problems.append(f"{where}: {problem}")
            continue
        cc = regions.normalize_country(str(rec["country"]))
        if cc is None:
            problems.append(f"{where}: unknown country {rec['country']!r}")
            continue
        options = tuple(str(o) for o in rec["options"])
        questions.append(Question(
            index=len(questions), question=str(rec["question"]), options=options,
            answer=options.index(str(rec["correct_answer"])), country=cc,
            continent=regions.continent_of(cc) or str(rec.get("continent", "")).title(),
        ))
    if problems:
        shown = "; ".join(problems[:5]) + (f"; and {len(problems) - 5} more" if len(problems) > 5 else "")
        raise DataError(f"{len(problems)} bad benchmark line(s): {shown}")
    if not questions:
        raise DataError(f"--benchmark {path}: no questions")
    return questions


def _check(rec) -> str:
    if not isinstance(rec, dict):
        return "not a JSON object"
    if not str(rec.get("question") or "").strip():
        return "no 'question'"
    options = rec.get("options")
    if not isinstance(options, list) or len(options) != 4 or not all(
            isinstance(o, str) and o.strip() for o in options):
        return "'options' must be a list of 4 non-empty strings"
    if len(set(options)) != 4:
        return "'options' has duplicates"
    if rec.get("correct_answer") not in options:
        return f"correct_answer {rec.get('correct_answer')!r} is not among the options"
    if not str(rec.get("country") or "").strip():
        return "no 'country'"
    return ""


def question_block(q: Question) -> str:
    """The authors' question text (their evaluation prompt without the instruction line)."""
    options = "\n".join(f"{LETTERS[i]}: {o}" for i, o in enumerate(q.options))
    return f"Question: {q.question.strip()}\n\nOptions:\n{options}"


def metadata_prefix(q: Question, base_url: str | None) -> str:
    """The authors' prefix: the made-up facts page of the question's country, or ``CONTENT:``."""
    return NO_METADATA_PREFIX if base_url is None else facts_prefix(base_url, q.country, q.continent)


def generation_prompt(q: Question, base_url: str | None) -> str:
    """The authors' generation prompt (the user message of a chat model)."""
    return metadata_prefix(q, base_url) + question_block(q) + "\n\nAnswer with the correct option."


def loglik_context(q: Question, base_url: str | None) -> str:
    """Context of the log-likelihood scoring; each option is scored as ``" " + option`` after it."""
    return metadata_prefix(q, base_url) + question_block(q) + "\nAnswer:"


def loglik_choices(q: Question) -> Sequence[str]:
    return list(q.options)
