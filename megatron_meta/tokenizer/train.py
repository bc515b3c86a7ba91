"""``megatron-meta train-tokenizer``: a SentencePiece model for metadata-framed documents.

The model is trained on the formatted texts (metadata lines, ``TITLE:``, ``CONTENT:``) and set up
so that decoding the ids of a formatted document gives back exactly that text, newlines included:

* ``normalization_rule_name=identity``, ``remove_extra_whitespaces=False``: no NFKC, no collapsing
  of spaces; ``add_dummy_prefix=False``: no space invented at the start of a text.
* ``"\\n"`` is a user-defined piece (otherwise SentencePiece treats newlines as spaces), and
  ``byte_fallback=True`` so any character round-trips.
* ``model_type=bpe`` by default: with ``"\\n"`` atomic, a BPE model encodes a metadata prefix and
  its body independently (see :mod:`megatron_meta.tokenizer.batch`), which lets preprocessing
  tokenize the body once for all variants. Unigram models are accepted but lose that.

The trained model is checked on the training sample: every text must decode back to itself.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import os
from typing import Iterable, Iterator, List, Optional

from megatron_meta.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

MODEL_TYPES = ("bpe", "unigram")
# The SentencePiece literal-space marker cannot round-trip (it decodes to " ").
SP_SPACE = "\u2581"


class _Lines:
    """Training "sentences": the lines of each document (``"\\n"`` is its own piece anyway).

    SentencePiece wraps any exception raised by its input iterator in a RuntimeError; this keeps
    the reader's own error (e.g. a DataError naming file and line) to re-raise after training.
    """

    def __init__(self, documents: Iterable[str], keep: int) -> None:
        self.sample: List[str] = []
        self.error: Optional[BaseException] = None
        self._documents = documents
        self._keep = keep

    def __iter__(self) -> Iterator[str]:
        try:
            for text in self._documents:
                if len(self.sample) < self._keep:
                    self.sample.append(text)
                for line in text.split("\n"):
                    if line:
                        yield line
        except Exception as e:  # noqa: BLE001 - re-raised by train_sentencepiece
            self.error = e


def train_sentencepiece(
    documents: Iterable[str],
    model_prefix: str,
    vocab_size: int,
    model_type: str = "bpe",
    character_coverage: float = 0.9995,
    input_sentence_size: int = 2_000_000,
    num_threads: int = 2,
    verify_documents: int = 200,
) -> str:
    """Train a SentencePiece model on formatted documents; returns the ``.model`` path.

    Args:
        documents: Formatted training texts (e.g. ``format_document(doc, variant)``).
        model_prefix: Output prefix; writes ``{prefix}.model`` and ``{prefix}.vocab``
            (under temporary names first, renamed when training and the check succeed).
        vocab_size: Target vocabulary size (a smaller corpus may yield fewer pieces).
        model_type: ``bpe`` (default; allows shared-body encoding) or ``unigram``.
        character_coverage: Share of characters covered by pieces; the rest use byte fallback.
        input_sentence_size: Lines sampled by SentencePiece for training.
        num_threads: Trainer threads.
        verify_documents: How many of the first documents must decode back to themselves.

    Raises:
        ConfigError: bad arguments. DataError: empty corpus or a failed round trip.
    """
    import sentencepiece as spm

    if model_type not in MODEL_TYPES:
        raise ConfigError(f"--model-type {model_type!r}: choose from {', '.join(MODEL_TYPES)}")
    if vocab_size < 300:
        raise ConfigError(
            f"--vocab-size {vocab_size}: needs at least 300 (256 byte pieces + specials)"
        )
    out_dir = os.path.dirname(os.path.abspath(model_prefix))
    os.makedirs(out_dir, exist_ok=True)
    tmp_prefix = f"{model_prefix}.tmp{os.getpid()}"
    source = _Lines(documents, verify_documents)
    lines = iter(source)
    first = next(lines, None)
    if source.error is not None:
        raise source.error
    if first is None:
        raise DataError("no documents to train the tokenizer on; check --input and its filters")
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=itertools.chain([first], lines),
            model_prefix=tmp_prefix,
            vocab_size=vocab_size,
            model_type=model_type,
            normalization_rule_name="identity",
            add_dummy_prefix=False,
            remove_extra_whitespaces=False,
            user_defined_symbols=["\n"],
            byte_fallback=True,
            character_coverage=character_coverage,
            input_sentence_size=input_sentence_size,
            shuffle_input_sentence=True,
            max_sentence_length=1 << 16,
            hard_vocab_limit=False,
            num_threads=num_threads,
            unk_id=0,
            bos_id=1,
            eos_id=2,
            pad_id=-1,
            minloglevel=2,
        )
        if source.error is not None:
            raise source.error
        _check_round_trip(tmp_prefix + ".model", source.sample)
        for ext in (".vocab", ".model"):  # .model last: its presence means the pair is complete
            os.replace(tmp_prefix + ext, model_prefix + ext)
    finally:
        for ext in (".model", ".vocab"):
            if os.path.exists(tmp_prefix + ext):
                os.remove(tmp_prefix + ext)
    logger.info("wrote %s.model (%s, vocab %d)", model_prefix, model_type, vocab_size)
    return model_prefix + ".model"


def _check_round_trip(model_path: str, texts: List[str]) -> None:
    import sentencepiece as spm

    sp = spm.SentencePieceProcessor(model_file=model_path)
    for text in texts:
        if SP_SPACE in text:
            continue  # documented limitation: U+2581 decodes to a space
        if sp.decode(sp.encode(text)) != text:
            raise DataError(f"trained tokenizer does not round-trip {text[:80]!r}; please report")


def build_parser() -> argparse.ArgumentParser:
    from megatron_meta.corpora.registry import add_corpus_arguments

    parser = argparse.ArgumentParser(
        prog="megatron-meta train-tokenizer",
        description="Train a SentencePiece model on metadata-formatted documents.",
    )
    add_corpus_arguments(parser)
    parser.add_argument(
        "--output-prefix",
        "--tokenizer-model",
        dest="output_prefix",
        required=True,
        help="writes PREFIX.model and PREFIX.vocab (a trailing .model is dropped)",
    )
    parser.add_argument("--vocab-size", type=int, default=16000)
    parser.add_argument("--model-type", choices=MODEL_TYPES, default="bpe")
    parser.add_argument(
        "--metadata-variants",
        default="full,none",
        help="variants to frame documents with; document i uses variant i mod k",
    )
    parser.add_argument("--url-form", choices=("full", "domain"), default="full")
    parser.add_argument(
        "--max-documents",
        type=int,
        default=None,
        help="train on at most this many documents (default: all)",
    )
    parser.add_argument("--character-coverage", type=float, default=0.9995)
    parser.add_argument("--num-threads", type=int, default=2)
    parser.add_argument("--on-bad-record", choices=("error", "skip"), default="error")
    return parser


def main(argv: List[str]) -> int:
    from megatron_meta.corpora.bad_records import BadRecords
    from megatron_meta.corpora.registry import corpus_spec_from_args, iter_documents
    from megatron_meta.metadata.formatting import format_document, parse_variants
    from megatron_meta.tokenizer.load import quiet_megatron_logs

    quiet_megatron_logs()
    args = build_parser().parse_args(argv)
    variants = parse_variants(args.metadata_variants)
    if args.max_documents is not None and args.max_documents <= 0:
        raise ConfigError(f"--max-documents {args.max_documents}: must be positive")
    spec = corpus_spec_from_args(args)
    bad = BadRecords(args.on_bad_record)
    docs = itertools.islice(iter_documents(spec, bad), args.max_documents)
    texts = (
        format_document(doc, variants[i % len(variants)], args.url_form)
        for i, doc in enumerate(docs)
    )
    prefix: str = args.output_prefix
    if prefix.endswith(".model"):
        prefix = prefix[: -len(".model")]
    from megatron_meta.outputs import check_output

    check_output(prefix, "--output-prefix", kind="prefix")  # before reading the corpus
    path = train_sentencepiece(
        texts,
        prefix,
        args.vocab_size,
        model_type=args.model_type,
        character_coverage=args.character_coverage,
        num_threads=args.num_threads,
    )
    if bad.total:
        logger.warning("skipped %d bad records: %s", bad.total, bad.summary())
    print(
        f"tokenizer: {path} (use --tokenizer-type SentencePieceTokenizer --tokenizer-model {path})"
    )
    return 0
