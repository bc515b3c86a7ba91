"""A tiktoken vocabulary in megatron-core's format (``TikTokenizer``) from a byte-level BPE.

megatron-core's ``TikTokenizer`` reads a JSON list of ``{rank, token_bytes, token_str}``. Byte-level
BPE vocabularies (Hugging Face ``tokenizer.json`` with ``ByteLevel``) map bytes to printable
characters (GPT-2's table); undoing that mapping and ranking tokens by id (the merge order) gives
tiktoken ranks, as OpenAI's r50k was derived from GPT-2. Used by the tests and the benchmark.
"""

from __future__ import annotations

import base64
import json
from typing import Dict


def _bytes_decoder() -> Dict[str, int]:
    """GPT-2's byte <-> printable-character table, inverted."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {chr(c): b for b, c in zip(bs, cs)}


def tiktoken_vocab_from_bytelevel_bpe(path: str, hf_tokenizer_json: str) -> str:
    """megatron-core's tiktoken format (rank/token_bytes/token_str list) from a byte-level BPE."""
    with open(hf_tokenizer_json, encoding="utf-8") as f:
        spec = json.load(f)
    decoder = _bytes_decoder()
    vocab = sorted(spec["model"]["vocab"].items(), key=lambda kv: kv[1])
    ranks = [bytes([i]) for i in range(256)]
    seen = set(ranks)
    for token, _ in vocab:
        if token.startswith("<|"):
            continue
        raw = bytes(decoder[c] for c in token)
        if raw not in seen:
            seen.add(raw)
            ranks.append(raw)
    entries = [
        {
            "rank": i,
            "token_bytes": base64.b64encode(b).decode(),
            "token_str": b.decode("utf-8", "replace"),
        }
        for i, b in enumerate(ranks)
    ]
    with open(path, "w", encoding="utf-8") as f:
        json.dump(entries, f)
    return path
