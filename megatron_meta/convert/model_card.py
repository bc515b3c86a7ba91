"""The model card (``README.md``) that ``convert to-hf`` writes beside the weights.

It says what a user of the folder needs to know: the training data and metadata variant (and
the regions left out), the metadata format to prompt with, the recipe (shape, tokens, schedule),
and, when the checkpoint belongs to a study (``{study}/runs/{run}``), the study's evaluation
figures for that run: perplexity per region with and without metadata, MCQ accuracy.
"""

from __future__ import annotations

import json
import os
from typing import Any, Dict, List

from megatron_meta.checkpoints.layout import CheckpointInfo
from megatron_meta.corpora.records import Document
from megatron_meta.metadata.formatting import VARIANTS, metadata_prefix

EXAMPLE = Document(id="example", url="https://www.bbc.co.uk/news/uk-38539472", country="gb",
                   continent="Europe", title="{title}", text="{text}")


def _section(config: Dict[str, Any], name: str) -> Dict[str, Any]:
    value = config.get(name)
    return value if isinstance(value, dict) else {}


def _data_lines(config: Dict[str, Any]) -> List[str]:
    data = _section(config, "data")
    if not data.get("manifest"):
        return ["## Training data", "", "Not recorded in the checkpoint (converted from another "
                "format, not trained with megatron-meta).", ""]
    variant = data.get("variant") or "full"
    lines = ["## Training data", "",
             f"- manifest: `{data.get('manifest')}` (megatron-meta preprocess)",
             f"- metadata variant: `{variant}` (fields: {', '.join(VARIANTS.get(variant, ())) or 'none'})"]
    if data.get("exclude_regions"):
        lines.append(f"- regions left out: {', '.join(data['exclude_regions'])}")
    if data.get("region_weights"):
        lines.append(f"- region weights: {data['region_weights']}")
    manifest = data.get("manifest")
    if manifest and os.path.isfile(manifest):
        try:
            with open(manifest, encoding="utf-8") as f:
                shards = [s for s in json.load(f).get("shards", []) if s.get("variant") == variant]
        except (OSError, ValueError):
            shards = []
        for s in shards:
            if s.get("region") not in (data.get("exclude_regions") or []):
                lines.append(f"- shard {s.get('region') or 'all'}: {s.get('documents', 0):,} documents, "
                             f"{s.get('tokens', 0):,} tokens")
    return lines + [""]


def _prompt_lines(config: Dict[str, Any]) -> List[str]:
    variant = _section(config, "data").get("variant") or "full"
    example = metadata_prefix(EXAMPLE, variant) if variant != "none" else ""
    text = example + "TITLE: {title}\n\nCONTENT: {text}"
    return ["## Prompting", "",
            "Documents were seen in this format (metadata first, then the headline and the text); "
            "prompt with the metadata of the place you want the text to be about, and let the "
            "model continue after `TITLE:` or `CONTENT:`:", "", "```", text, "```", ""]


def _recipe_lines(info: CheckpointInfo) -> List[str]:
    p, t = info.preset, _section(info.config, "training")
    o = _section(info.config, "optimizer")
    lines = ["## Recipe", "",
             f"- model: {p.name}: {p.num_layers} layers, hidden {p.hidden_size}, "
             f"{p.num_attention_heads} heads ({p.num_query_groups} KV groups), vocabulary {info.vocab_size:,}",
             f"- trained {info.iteration:,} iterations at sequence length {info.seq_length}"]
    if t.get("global_batch_size"):
        tokens = info.iteration * int(t["global_batch_size"]) * info.seq_length
        lines.append(f"- global batch {t['global_batch_size']} sequences (~{tokens:,} tokens seen)")
    if o.get("lr") is not None:
        lines.append(f"- lr {o['lr']} -> {o.get('min_lr')} ({o.get('lr_decay_style', 'cosine')}), "
                     f"warmup {o.get('lr_warmup_iters')} iterations, weight decay {o.get('weight_decay')}")
    return lines + [""]


def _study_lines(load: str) -> List[str]:
    """The study's figures for this run, when ``load`` is ``{study}/runs/{run}``."""
    run = os.path.basename(os.path.normpath(load))
    root = os.path.dirname(os.path.dirname(os.path.abspath(load)))
    lines: List[str] = []
    path = os.path.join(root, "eval", "perplexity", f"{run}.json")
    if os.path.isfile(path):
        # Read as plain JSON (the results file of `evaluate perplexity`): convert sits below
        # evaluation in the pipeline and imports nothing from it.
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        rows = raw.get("results", []) if isinstance(raw, dict) else raw
        lines += ["### Perplexity on held-out documents (95% bootstrap interval)", "",
                  "| region | test variant | perplexity | ratio to no metadata |", "|---|---|---:|---:|"]
        for r in rows:
            ratio = "" if r.get("ratio_to_none") is None else (
                f"{r['ratio_to_none']:.3f} [{r['ratio_ci_low']:.3f}, {r['ratio_ci_high']:.3f}]")
            lines.append(f"| {r['region']} | {r['variant']} | {r['ppl']:.2f} "
                         f"[{r['ci_low']:.2f}, {r['ci_high']:.2f}] | {ratio} |")
        lines.append("")
    path = os.path.join(root, "eval", "mcq", f"{run}.json")
    if os.path.isfile(path):
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
        by: Dict[str, List[bool]] = {}
        for r in raw.get("records", []):
            by.setdefault(str(r.get("setting")), []).append(bool(r.get("correct")))
        lines += [f"### MCQ accuracy ({os.path.basename(str(raw.get('config', {}).get('benchmark')))})", ""]
        lines += [f"- {k} metadata: {100 * sum(v) / len(v):.1f}% of {len(v)}" for k, v in by.items()]
        lines.append("")
    return (["## Evaluation (from the study)", ""] + lines) if lines else []


def write_model_card(folder: str, info: CheckpointInfo, load: str) -> str:
    """Write ``folder/README.md``; returns its path."""
    run = os.path.basename(os.path.normpath(load))
    lines = ["---", "library_name: transformers", "tags: [megatron-meta, metadata-conditioning]", "---",
             "", f"# {run}", "",
             "A Llama-architecture causal language model pretrained with megatron-meta (megatron-core) "
             "on documents preceded by their metadata (URL, country, continent), as in *Metadata "
             "Conditioned Large Language Models for Localization* (arXiv 2601.15236).", "",
             f"Converted from `{info.path}`.", ""]
    lines += _data_lines(info.config) + _prompt_lines(info.config) + _recipe_lines(info)
    lines += _study_lines(load)
    path = os.path.join(folder, "README.md")
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n".join(lines).rstrip() + "\n")
    return path
