"""--partitions N --partition-index I and `megatron-meta merge`: the merged parts are byte for byte
one run over the whole corpus; parts of different runs, and missing parts, are refused."""

import filecmp
import json
import os
import subprocess
import sys

import pytest
from preprocess_fixtures import TOKENIZER_TYPES, make_documents, write_jsonl

from megatron_meta.cli import main as cli_main
from megatron_meta.corpora.registry import CorpusSpec
from megatron_meta.errors import ConfigError, DataError
from megatron_meta.metadata.formatting import VARIANTS
from megatron_meta.preprocess.holdout import HoldoutConfig
from megatron_meta.manifest import load_manifest
from megatron_meta.preprocess.merge import merge_parts
from megatron_meta.preprocess.runner import PreprocessConfig, run_preprocess


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    # Bad records at the start, in the middle and at the end: their counts must add up.
    docs = make_documents(60, seed=11)
    path = str(tmp_path_factory.mktemp("corpus") / "news.jsonl")
    write_jsonl(path, docs[:1], ["{not json"])
    with open(path, "a", encoding="utf-8") as f:
        for i, doc in enumerate(docs[1:]):
            f.write(json.dumps(doc.to_json(), ensure_ascii=False) + "\n")
            if i == 29:
                f.write('{"text": "no country"}\n')
        f.write('{"text": ""}\n')
    return path


def run(out, corpus, toks, name="sp_bpe", parts=1, index=0, seed=42, variants=None, **kw):
    config = PreprocessConfig(
        corpus=CorpusSpec(inputs=[corpus]),
        output_prefix=str(out),
        tokenizer_type=TOKENIZER_TYPES[name],
        tokenizer_model=toks[name],
        variants=list(variants or VARIANTS),
        split_by="continent",
        append_eod=True,
        holdout=HoldoutConfig(2, 0.1, seed),
        on_bad_record="skip",
        workers=kw.pop("workers", 0),
        partitions=parts,
        partition_index=index,
        progress_bar=False,
        **kw,
    )
    return run_preprocess(config).manifest_path


def assert_same_outputs(one_path, merged_path):
    one, merged = load_manifest(one_path), load_manifest(merged_path)
    assert len(one.shards) == len(merged.shards) == 4 * len(VARIANTS)
    for a, b in zip(one.shards, merged.shards):
        assert (a.variant, a.region, a.documents, a.tokens) == (
            b.variant,
            b.region,
            b.documents,
            b.tokens,
        )
        for ext in (".bin", ".idx", ".metadata_tokens.npy"):
            assert filecmp.cmp(a.prefix + ext, b.prefix + ext, shallow=False), (a.prefix, ext)
    assert [(h.split, h.region, h.documents) for h in one.holdout] == [
        (h.split, h.region, h.documents) for h in merged.holdout
    ]
    for a, b in zip(one.holdout, merged.holdout):
        assert filecmp.cmp(a.path, b.path, shallow=False)
    assert sum(h.documents for h in one.holdout if h.split == "test") == 8  # 2 per continent
    assert one.skipped == merged.skipped == {"malformed_json": 1, "missing_url": 1,
                                             "missing_text": 1}  # fmt: skip
    assert merged.partition is None


@pytest.mark.slow
def test_three_parts_merged_equal_one_run(tmp_path, corpus, toks):
    one = run(tmp_path / "one" / "news", corpus, toks)
    # Parts with different worker counts, given to merge out of order, through the CLI.
    parts = [
        run(tmp_path / "parts" / f"p{i}", corpus, toks, parts=3, index=i, workers=i % 2)
        for i in range(3)
    ]
    ranges = [load_manifest(p).partition for p in parts]
    assert [(r["first_document"], r["end_document"]) for r in ranges] == [(0, 20), (20, 40), (40, 60)]
    assert sum(sum(load_manifest(p).skipped.values()) for p in parts) == 3
    merged = str(tmp_path / "merged" / "news")
    assert cli_main(["merge", "--input", parts[2], parts[0], parts[1], "--output-prefix", merged]) == 0
    assert_same_outputs(one, merged + ".manifest.json")
    assert not [f for f in os.listdir(tmp_path / "merged") if ".tmp" in f]


def test_more_parts_than_documents(tmp_path, toks):
    docs = make_documents(4, seed=2)
    corpus = write_jsonl(str(tmp_path / "tiny.jsonl"), docs)

    def tiny(out, **kw):
        config = PreprocessConfig(
            corpus=CorpusSpec(inputs=[corpus]), output_prefix=str(out),
            tokenizer_type="SentencePieceTokenizer", tokenizer_model=toks["sp_bpe"],
            variants=["full", "none"], append_eod=True, workers=0, progress_bar=False, **kw,
        )  # fmt: skip
        return run_preprocess(config).manifest_path

    one = load_manifest(tiny(tmp_path / "one"))
    parts = [tiny(tmp_path / f"p{i}", partitions=6, partition_index=i) for i in range(6)]
    assert [load_manifest(p).shards == [] for p in parts].count(True) == 2  # empty parts
    merged = merge_parts(parts, str(tmp_path / "merged"))
    for a, b in zip(one.shards, merged.shards):
        for ext in (".bin", ".idx", ".metadata_tokens.npy"):
            assert filecmp.cmp(a.prefix + ext, b.prefix + ext, shallow=False)


def test_merge_refusals(tmp_path, corpus, toks, capsys):
    kw = dict(variants=["full", "none"], parts=2)
    p0 = run(tmp_path / "p0", corpus, toks, index=0, **kw)
    p1 = run(tmp_path / "p1", corpus, toks, index=1, **kw)
    cases = {
        "--seed": run(tmp_path / "seed", corpus, toks, index=1, seed=7, **kw),
        "--metadata-variants": run(
            tmp_path / "var", corpus, toks, index=1, parts=2, variants=["full"]
        ),
        "tokenizer": run(tmp_path / "tok", corpus, toks, "sp_llama2", index=1, **kw),
    }
    for what, other in cases.items():
        with pytest.raises(DataError, match=f"different {what}"):
            merge_parts([p0, other], str(tmp_path / "m"))
    with pytest.raises(DataError, match=r"part\(s\) 1 of 2 missing"):
        merge_parts([p0], str(tmp_path / "m"))
    with pytest.raises(DataError, match="part 0 given twice"):
        merge_parts([p0, p0, p1], str(tmp_path / "m"))
    whole = run(tmp_path / "whole", corpus, toks, variants=["full"])
    with pytest.raises(DataError, match="not a part of a partitioned run"):
        merge_parts([whole, p1], str(tmp_path / "m"))
    assert not [f for f in os.listdir(tmp_path) if f.startswith("m")]  # nothing written
    # The CLI and Megatron-LM's tool name: one line, exit 2.
    assert cli_main(["merge", "--input", p0, "--output-prefix", str(tmp_path / "m")]) == 2
    assert "missing from --input" in capsys.readouterr().err
    tool = os.path.join(os.path.dirname(__file__), "..", "tools", "merge_datasets.py")
    proc = subprocess.run(
        [sys.executable, tool, "--input", p0, p1, cases["--seed"], "--output-prefix", "x"],
        capture_output=True, text=True, cwd=str(tmp_path),
    )  # fmt: skip
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("merge_datasets.py: error: ")
    with pytest.raises(ConfigError, match="--partition-index 2"):
        run(tmp_path / "bad", corpus, toks, parts=2, index=2)


def test_partition_flags_as_the_slurm_array_passes_them(tmp_path):
    from megatron_meta.preprocess.cli import build_parser, config_from_args

    argv = ["--input", "x.jsonl", "--output-prefix", "p", "--tokenizer-type",
            "SentencePieceTokenizer", "--tokenizer-model", "t.model",
            "--partitions", "8", "--partition-index", "7"]  # fmt: skip
    config = config_from_args(build_parser().parse_args(argv), argv)
    assert (config.partitions, config.partition_index) == (8, 7)
    # Megatron-LM users may pass --partitions alone: that must not quietly write one part.
    argv = argv[:-2]
    with pytest.raises(ConfigError, match="--partitions 8 needs --partition-index"):
        config_from_args(build_parser().parse_args(argv), argv)
