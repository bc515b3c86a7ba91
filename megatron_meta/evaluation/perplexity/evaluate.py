"""Per-region perplexity of a checkpoint on held-out documents, with and without metadata.

The paper's protocol (arXiv 2601.15236, FACTS section 1): up to 1,000 sampled test documents per
region (seed 42), each formatted in a metadata variant, tokenized with the training tokenizer and
truncated to 1,024 tokens; the loss is counted only from the ``TITLE:`` token on, so the variants
are scored on the same text and metadata only acts as context. Corpus perplexity is
``exp(total NLL / total tokens)`` with a 95% bootstrap interval over documents.

Two choices the paper leaves open, made so that variants differ only in their context:

* Truncation keeps the same body tokens in every variant: the body is cut at ``seq_length``
  minus the longest variant's metadata (cutting each formatted text at ``seq_length`` would
  score a metadata variant on less text than ``none``).
* Each document is scored after the end-of-document token, as in training where every document
  follows the previous one's EOD, so the first body token is predicted in every variant.

``--protocol paper`` scores as the authors' code did instead (:mod:`.paper`): BOS + the formatted
text cut to ``seq_length`` as a whole, the loss from the token after ``TITLE``, their sample and
bootstrap, and the ``All`` and leave-one-out test sets beside the regions.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from megatron_meta.corpora.records import Document, read_documents  # noqa: F401
from megatron_meta.errors import DataError
from megatron_meta.outputs import write_json
from megatron_meta.tokenizer.documents import (  # noqa: F401  (the evaluation's interface)
    Codec,
    Encoded,
    encode_variants,
    loss_start,
)

logger = logging.getLogger(__name__)

RESULTS_FORMAT = "megatron-meta-perplexity"

# (token sequences, loss start per sequence) -> (NLL sum per sequence, scored tokens per sequence)
ScoreFn = Callable[[List[List[int]], List[int]], Tuple[np.ndarray, np.ndarray]]


@dataclasses.dataclass
class PerplexityConfig:
    """What ``megatron-meta evaluate perplexity`` scores and how."""

    load: str
    """Checkpoint directory (a ``--save`` folder of ``megatron-meta train``)."""
    data_manifest: str
    """Preprocessing manifest whose held-out test JSONL and tokenizer are used."""
    variants: List[str]
    """Test variants to format documents in, e.g. ``["full", "none"]``."""
    max_documents: int = 1000
    """Documents sampled per region (all of them when fewer)."""
    seq_length: int = 1024
    """Tokens kept per document (the paper truncates to 1,024)."""
    seed: int = 42
    """Seed of the document sample and of the bootstrap."""
    bootstrap_samples: int = 1000
    """Bootstrap resamples over documents for the confidence interval."""
    confidence: float = 0.95
    """Width of the confidence interval."""
    micro_batch_size: int = 8
    """Documents per forward pass."""
    label: Optional[str] = None
    """Model name in the results; the checkpoint folder's name when not given."""
    protocol: str = "ours"
    """``paper``: the authors' encoding, sample, bootstrap and test sets (:mod:`.paper`)."""
    bos_id: Optional[int] = None
    """BOS token id (the manifest's tokenizer), needed by the paper protocol."""


@dataclasses.dataclass
class RegionResult:
    """Perplexity of one model on one region's test documents in one variant."""

    model: str
    variant: str
    region: str
    documents: int
    tokens: int
    nll: float
    ppl: float
    ci_low: float
    ci_high: float
    train_variant: Optional[str] = None
    """Variant the model was trained on (from its checkpoint)."""
    ratio_to_none: Optional[float] = None
    """This variant's perplexity over ``none``'s on the same documents (< 1: metadata helps)."""
    ratio_ci_low: Optional[float] = None
    ratio_ci_high: Optional[float] = None
    """Paired bootstrap interval of ``ratio_to_none`` (the same resampled documents for both)."""
    document_ids: Optional[List[str]] = None
    document_nll: Optional[List[float]] = None
    document_tokens: Optional[List[int]] = None
    """Per document: id, NLL sum (nats) and scored tokens, for further analysis."""


def sample_documents(docs: Sequence[Document], max_documents: int, seed: int = 42) -> List[Document]:
    """Up to ``max_documents`` of ``docs``, a seeded sample kept in file order (all if fewer)."""
    if len(docs) <= max_documents:
        return list(docs)
    keep = sorted(random.Random(seed).sample(range(len(docs)), max_documents))
    return [docs[i] for i in keep]


def _resample_counts(n: int, samples: int, seed: int) -> np.ndarray:
    """How often each of ``n`` documents appears in each bootstrap resample: (samples, n)."""
    rng = np.random.default_rng(seed)
    return rng.multinomial(n, np.full(n, 1.0 / n), size=samples).astype(np.float64)


def _interval(values: np.ndarray, confidence: float) -> Tuple[float, float]:
    alpha = (1.0 - confidence) / 2.0
    low, high = np.quantile(values, [alpha, 1.0 - alpha])
    return float(low), float(high)


def bootstrap_ci(
    nll: np.ndarray,
    tokens: np.ndarray,
    samples: int = 1000,
    seed: int = 42,
    confidence: float = 0.95,
) -> Tuple[float, float]:
    """Percentile bootstrap interval of corpus perplexity, resampling whole documents."""
    nll = np.asarray(nll, dtype=np.float64)
    tokens = np.asarray(tokens, dtype=np.float64)
    if len(nll) == 0:
        return float("nan"), float("nan")
    counts = _resample_counts(len(nll), samples, seed)
    return _interval(np.exp((counts @ nll) / np.maximum(counts @ tokens, 1.0)), confidence)


def paired_ratio_ci(
    nll_a: np.ndarray, tokens_a: np.ndarray, nll_b: np.ndarray, tokens_b: np.ndarray,
    samples: int = 1000, seed: int = 42, confidence: float = 0.95,
) -> Tuple[float, float, float]:
    """Perplexity ratio a/b on the same documents, with a paired bootstrap interval.

    Resampling a document resamples it in both, so the interval reflects the difference the
    variants make rather than how hard the sampled documents are; it is far narrower than
    comparing the two separate intervals.
    """
    arrays = [np.asarray(x, dtype=np.float64) for x in (nll_a, tokens_a, nll_b, tokens_b)]
    if len({len(x) for x in arrays}) != 1:
        raise ValueError("paired_ratio_ci needs the same documents in both")
    nll_a, tokens_a, nll_b, tokens_b = arrays
    if len(nll_a) == 0:
        return float("nan"), float("nan"), float("nan")
    ratio = corpus_perplexity(nll_a, tokens_a) / corpus_perplexity(nll_b, tokens_b)
    counts = _resample_counts(len(nll_a), samples, seed)
    log_a = (counts @ nll_a) / np.maximum(counts @ tokens_a, 1.0)
    log_b = (counts @ nll_b) / np.maximum(counts @ tokens_b, 1.0)
    low, high = _interval(np.exp(log_a - log_b), confidence)
    return ratio, low, high


def corpus_perplexity(nll: np.ndarray, tokens: np.ndarray) -> float:
    total = float(np.sum(tokens))
    return math.exp(float(np.sum(nll)) / total) if total > 0 else float("nan")


def score_documents(
    score: ScoreFn,
    docs: Sequence[Document],
    variants: Sequence[str],
    url_form: str,
    codec: Codec,
    seq_length: int,
) -> Tuple[List[str], Dict[str, Tuple[np.ndarray, np.ndarray]]]:
    """Ids of the scored documents, and variant -> (NLL sum, scored tokens) per document.

    Every variant scores the same documents in the same order (a document whose metadata fills
    ``seq_length`` is left out of all of them), so results can be compared pairwise.
    """
    batches: Dict[str, List[Encoded]] = {v: [] for v in variants}
    kept: List[str] = []
    for doc in docs:
        encoded = encode_variants(doc, variants, url_form, codec, seq_length)
        if encoded is None:
            logger.warning("document %s: metadata fills all %d tokens; not scored", doc.id, seq_length)
            continue
        kept.append(doc.id)
        for variant, item in encoded.items():
            batches[variant].append(item)
    out = {}
    for variant, items in batches.items():
        if not items:
            out[variant] = (np.zeros(0), np.zeros(0, dtype=np.int64))
            continue
        nll, count = score([e.sequence for e in items], [e.start for e in items])
        out[variant] = (np.asarray(nll, dtype=np.float64), np.asarray(count, dtype=np.int64))
    return kept, out


def region_result(
    model: str, variant: str, region: str, nll: np.ndarray, tokens: np.ndarray,
    config: PerplexityConfig, train_variant: Optional[str] = None,
) -> RegionResult:
    low, high = bootstrap_ci(nll, tokens, config.bootstrap_samples, config.seed, config.confidence)
    return RegionResult(
        model=model, variant=variant, region=region, documents=int(len(nll)),
        tokens=int(np.sum(tokens)), nll=float(np.sum(nll)), ppl=corpus_perplexity(nll, tokens),
        ci_low=low, ci_high=high, train_variant=train_variant,
        document_nll=[float(x) for x in nll], document_tokens=[int(x) for x in tokens],
    )


def held_out_test_sets(manifest) -> Dict[str, List[Document]]:
    """Region name -> its held-out test documents, from a loaded manifest."""
    sets: Dict[str, List[Document]] = {}
    for entry in manifest.holdout:
        if entry.split == "test":
            sets.setdefault(entry.region or "all", []).extend(read_documents(entry.path))
    if not sets:
        raise DataError(
            f"{manifest.path}: no held-out test documents; re-run preprocess with --holdout-test N"
        )
    return dict(sorted(sets.items()))


def evaluate_documents(
    score: ScoreFn,
    codec: Codec,
    sets: Dict[str, List[Document]],
    config: PerplexityConfig,
    model: str,
    url_form: str = "full",
    train_variant: Optional[str] = None,
) -> List[RegionResult]:
    """Score every region's sample in every variant (the same sample for each variant)."""
    if config.protocol == "paper":
        return _evaluate_paper(score, codec, sets, config, model, url_form, train_variant)
    results: List[RegionResult] = []
    for region, docs in sets.items():
        sample = sample_documents(docs, config.max_documents, config.seed)
        ids, scored = score_documents(
            score, sample, config.variants, url_form, codec, config.seq_length
        )
        for variant in config.variants:
            nll, tokens = scored[variant]
            result = region_result(model, variant, region, nll, tokens, config, train_variant)
            result.document_ids = list(ids)
            if variant != "none" and "none" in scored:
                result.ratio_to_none, result.ratio_ci_low, result.ratio_ci_high = paired_ratio_ci(
                    nll, tokens, *scored["none"], config.bootstrap_samples, config.seed,
                    config.confidence,
                )
            logger.info(
                "%s | %-8s | test %-5s | %4d docs %7d tokens | ppl %.2f [%.2f, %.2f]%s",
                model, region, variant, result.documents, result.tokens, result.ppl,
                result.ci_low, result.ci_high,
                "" if result.ratio_to_none is None else
                f" | x{result.ratio_to_none:.3f} of none [{result.ratio_ci_low:.3f}, "
                f"{result.ratio_ci_high:.3f}]",
            )
            results.append(result)
    return results


def _evaluate_paper(score, codec, sets, config, model, url_form, train_variant) -> List[RegionResult]:
    from megatron_meta.evaluation.perplexity.paper import (
        encode_paper, paper_bootstrap, paper_sample, paper_test_sets,
    )

    if config.bos_id is None:
        raise DataError("--protocol paper scores BOS + text, but the manifest's tokenizer has no "
                        "BOS token; use --protocol ours")
    # An ablation model is scored in its own format (its variant stands for "with metadata").
    variants = [train_variant if v == "full" and train_variant not in (None, "none") else v
                for v in config.variants]
    results: List[RegionResult] = []
    for region, docs in paper_test_sets(sets, config.seed).items():
        scored = {}
        for variant in dict.fromkeys(variants):
            rng = np.random.default_rng(config.seed)  # fresh per (model, test set), as theirs
            picked = [docs[i] for i in paper_sample(len(docs), config.max_documents, rng)]
            items = [(d.id, encode_paper(d, variant, url_form, codec, config.bos_id, config.seq_length))
                     for d in picked]
            items = [(i, e) for i, e in items if e is not None]
            nll, count = score([e.sequence for _, e in items], [e.start for _, e in items]) if items \
                else (np.zeros(0), np.zeros(0, dtype=np.int64))
            nll, count = np.asarray(nll, dtype=np.float64), np.asarray(count, dtype=np.int64)
            low, high = paper_bootstrap(nll, count, config.bootstrap_samples, config.confidence, rng)
            result = RegionResult(
                model=model, variant=variant, region=region, documents=len(items),
                tokens=int(count.sum()), nll=float(nll.sum()), ppl=corpus_perplexity(nll, count),
                ci_low=low, ci_high=high, train_variant=train_variant,
                document_ids=[i for i, _ in items], document_nll=[float(x) for x in nll],
                document_tokens=[int(x) for x in count],
            )
            scored[variant] = result
            logger.info("%s | %-10s | test %-5s | %4d docs %7d tokens | ppl %.2f [%.2f, %.2f] (paper)",
                        model, region, variant, result.documents, result.tokens, result.ppl, low, high)
            results.append(result)
        none = scored.get("none")
        for variant, result in scored.items():
            if variant != "none" and none is not None and none.document_ids == result.document_ids:
                result.ratio_to_none, result.ratio_ci_low, result.ratio_ci_high = paired_ratio_ci(
                    result.document_nll, result.document_tokens, none.document_nll,
                    none.document_tokens, config.bootstrap_samples, config.seed, config.confidence)
    return results


def write_results(path: str, results: List[RegionResult], config: PerplexityConfig) -> None:
    """Write results JSON atomically (temporary name, then rename)."""
    payload = {
        "format": RESULTS_FORMAT,
        "config": dataclasses.asdict(config),
        "results": [dataclasses.asdict(r) for r in results],
    }
    write_json(path, payload, indent=2)


def read_results(path: str) -> List[RegionResult]:
    """Results written by :func:`write_results` (or a bare list of result objects)."""
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read perplexity results ({e})")
    rows = raw.get("results") if isinstance(raw, dict) else raw
    if not isinstance(rows, list):
        raise DataError(f"{path}: no 'results' list; write it with `megatron-meta evaluate perplexity`")
    fields = {f.name for f in dataclasses.fields(RegionResult)}
    try:
        return [RegionResult(**{k: v for k, v in row.items() if k in fields}) for row in rows]
    except TypeError as e:
        raise DataError(f"{path}: a result lacks a field ({e})")


def evaluate_checkpoint(config: PerplexityConfig) -> List[RegionResult]:
    """Load the checkpoint (TP=1, this process) and score the manifest's held-out test sets."""
    from megatron_meta.errors import CheckpointError
    from megatron_meta.models.scoring import make_score_fn
    from megatron_meta.manifest import load_manifest
    from megatron_meta.tokenizer.load import load_tokenizer
    from megatron_meta.checkpoints.load import load_model_for_eval

    manifest = load_manifest(config.data_manifest)
    sets = held_out_test_sets(manifest)  # before the model: a data mistake fails fast
    tokenizer = load_tokenizer(manifest.tokenizer.type, manifest.tokenizer.model)
    model, info = load_model_for_eval(config.load)
    if info.vocab_size != manifest.tokenizer.vocab_size:
        raise CheckpointError(
            f"--load {config.load}: the model has a {info.vocab_size}-token vocabulary but the "
            f"manifest's tokenizer has {manifest.tokenizer.vocab_size}; evaluate with the manifest "
            "the model was trained on"
        )
    if config.seq_length > info.seq_length:
        logger.warning(
            "--seq-length %d is longer than the %d tokens the model was trained on; positions "
            "beyond it are extrapolated", config.seq_length, info.seq_length,
        )
    train_variant = (info.config.get("data") or {}).get("variant")
    label = config.label or os.path.basename(os.path.normpath(config.load))
    logger.info(
        "scoring %s (trained on %s, iteration %d): %d region(s) x variants %s, up to %d documents "
        "each", label, train_variant, info.iteration, len(sets), ",".join(config.variants),
        config.max_documents,
    )

    if config.protocol == "paper":
        config.bos_id = manifest.tokenizer.bos_id
    score = make_score_fn(model, micro_batch_size=config.micro_batch_size)
    codec = Codec.of(tokenizer)
    if manifest.prepend_bos and manifest.tokenizer.bos_id is not None:
        # documents were trained after BOS (--prepend-bos), not after the previous one's EOD
        codec = dataclasses.replace(codec, eod=manifest.tokenizer.bos_id)
    return evaluate_documents(score, codec, sets, config, label, manifest.url_form, train_variant)
