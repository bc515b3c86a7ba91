"""The library's own bound for the preprocessing benchmark: the simplest fast thing a user writes.

``python -m megatron_meta.preprocess.bench_bound TYPE MODEL INPUT.jsonl THREADS`` reads the JSONL,
parses and formats every record (``full`` variant) and encodes the texts with the tokenizer
library's own multi-threaded batch call on ``THREADS`` threads: Hugging Face ``encode_batch_fast``
(its Rayon pool), SentencePiece ``encode(num_threads=)``, tiktoken ``encode_ordinary_batch
(num_threads=)``. One fresh process (the libraries read their thread settings at start-up); the
model load is excluded, reading and parsing are included. Prints one JSON line: wall seconds and
CPU seconds of the process (all its threads) over the timed part, and the token count.
"""

from __future__ import annotations

import json
import os
import sys
import time

BATCH = 4096  # texts a call: enough for every thread


def main(argv) -> int:
    tokenizer_type, model, path, threads = argv[0], argv[1], argv[2], int(argv[3])
    os.environ["TOKENIZERS_PARALLELISM"] = "true"
    os.environ["RAYON_NUM_THREADS"] = str(threads)
    from megatron_meta.corpora.records import Document
    from megatron_meta.metadata.formatting import format_document
    from megatron_meta.tokenizer.batch import library_encoder
    from megatron_meta.tokenizer.load import load_tokenizer_fast

    library = library_encoder(load_tokenizer_fast(tokenizer_type, model))
    if library is None:
        raise SystemExit(f"{tokenizer_type} {model}: no library batch call to measure")
    inner = library.inner
    if library.kind == "hf-batch":
        def encode(texts):
            return [len(e.ids) for e in inner.encode_batch_fast(texts, add_special_tokens=False)]
    elif library.kind == "sentencepiece-batch":
        def encode(texts):
            return [len(i) for i in inner.encode(texts, num_threads=threads)]
    else:
        def encode(texts):
            return [len(i) for i in inner.encode_ordinary_batch(texts, num_threads=threads)]
    encode(["warm up"])
    start, cpu = time.perf_counter(), time.process_time()
    tokens = 0
    batch = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            batch.append(format_document(Document.from_json(json.loads(line)), "full"))
            if len(batch) == BATCH:
                tokens += sum(encode(batch))
                batch = []
    tokens += sum(encode(batch)) if batch else 0
    out = {"wall": time.perf_counter() - start, "cpu": time.process_time() - cpu, "tokens": tokens}
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
