"""``megatron-meta generate``: sample from a model after a metadata prefix in the training format.

    megatron-meta generate --model M --prompt "The president said" \\
        --url https://www.vanguardngr.com/2017/01/x --country ng [--title T] [--greedy]

With ``--url``/``--country`` the text starts with the metadata lines of pretraining
(``URL: ...\\nCOUNTRY: ng\\nCONTINENT: Africa\\n\\n``, the continent from the region table),
then ``TITLE: {title}\\n\\nCONTENT: {prompt}`` when ``--title`` is given, else
``CONTENT: {prompt}``; ``--raw`` sends the prompt as it is. The model continues the text; run it
with and without ``--country`` (or with another country) to see how metadata steers it.
"""

from __future__ import annotations

import argparse
import math
from typing import List, Optional

from megatron_meta.errors import ConfigError


def build_text(prompt: str, url: Optional[str] = None, country: Optional[str] = None,
               title: Optional[str] = None, raw: bool = False) -> str:
    """The exact text the model continues."""
    if raw:
        return prompt
    from megatron_meta.metadata.regions import RegionTable

    lines = []
    if url:
        lines.append(f"URL: {url}")
    if country:
        regions = RegionTable.default()
        cc = regions.normalize_country(country)
        if cc is None:
            raise ConfigError(f"--country {country!r}: unknown country; give a code (ng) or a name")
        lines += [f"COUNTRY: {cc}", f"CONTINENT: {regions.continent_of(cc)}"]
    prefix = "\n".join(lines) + "\n\n" if lines else ""
    body = f"TITLE: {title}\n\nCONTENT: {prompt}" if title else f"CONTENT: {prompt}"
    return prefix + body


def main(argv: List[str]) -> int:
    p = argparse.ArgumentParser(prog="megatron-meta generate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="Hugging Face folder or megatron-meta checkpoint")
    p.add_argument("--prompt", required=True, help="start of the content")
    p.add_argument("--url", help="URL line of the metadata prefix")
    p.add_argument("--country", help="country code or name (its continent is added)")
    p.add_argument("--title", help="TITLE line before the content")
    p.add_argument("--raw", action="store_true", help="send --prompt as is, no format")
    p.add_argument("--max-new-tokens", type=int, default=64)
    p.add_argument("--greedy", action="store_true", help="greedy decoding instead of sampling")
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--num-samples", type=int, default=1)
    p.add_argument("--seed", type=int, default=42)
    args = p.parse_args(argv)
    if args.max_new_tokens < 1 or args.num_samples < 1:
        raise ConfigError("--max-new-tokens and --num-samples must be at least 1")
    if not args.greedy and not (0 < args.temperature < math.inf and 0 < args.top_p <= 1):
        raise ConfigError("--temperature must be > 0 and --top-p in (0, 1]; or use --greedy")

    import torch

    from megatron_meta.finetune.hf_load import load_causal_lm

    text = build_text(args.prompt, args.url, args.country, args.title, args.raw)
    model, tokenizer, _ = load_causal_lm(args.model)
    enc = tokenizer(text, return_tensors="pt")
    torch.manual_seed(args.seed)
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    sampling = {} if args.greedy else dict(do_sample=True, temperature=args.temperature,
                                          top_p=args.top_p)
    with torch.no_grad():
        out = model.generate(**enc, max_new_tokens=args.max_new_tokens, pad_token_id=pad,
                             num_return_sequences=args.num_samples, **(sampling or dict(
                                 do_sample=False, temperature=None, top_p=None, top_k=None)))
    print(text, end="")
    for i, row in enumerate(out):
        cont = tokenizer.decode(row[enc["input_ids"].shape[1]:], skip_special_tokens=True)
        print(("" if i == 0 else f"\n--- sample {i + 1}:\n{text}") + cont)
    return 0
