"""The preprocess command line: end to end, bad input, and failed or interrupted runs."""

import json
import os
import subprocess
import sys

import pytest
from preprocess_fixtures import make_documents, write_jsonl

from megatron_meta.cli import run_guarded
from megatron_meta.preprocess.cli import main as preprocess_main
from megatron_meta.manifest import load_manifest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def docs():
    return make_documents(24)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, docs):
    from preprocess_fixtures import training_texts

    from megatron_meta.tokenizer.train import train_sentencepiece

    return train_sentencepiece(
        training_texts(docs), str(tmp_path_factory.mktemp("tok") / "sp"), 500, num_threads=1
    )


def _args(corpus, out, tokenizer, *extra):
    return [
        "--input",
        corpus,
        "--output-prefix",
        str(out),
        "--tokenizer-type",
        "SentencePieceTokenizer",
        "--tokenizer-model",
        tokenizer,
        "--no-progress",
        *extra,
    ]


def _run_cli(args, script=None):
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS="1")
    cmd = (
        [sys.executable, script]
        if script
        else [sys.executable, "-m", "megatron_meta.cli", "preprocess"]
    )
    return subprocess.run(
        cmd + args, capture_output=True, text=True, env=env, cwd=REPO, timeout=300
    )


def _outputs(folder):
    return sorted(p for p in os.listdir(folder) if p.startswith("out"))


def test_end_to_end_cli(tmp_path, docs, tokenizer):
    corpus = write_jsonl(str(tmp_path / "news.jsonl"), docs)
    proc = _run_cli(
        _args(
            corpus,
            tmp_path / "data" / "out",
            tokenizer,
            "--metadata-variants",
            "full,none",
            "--split-by",
            "continent",
            "--holdout-test",
            "1",
            "--append-eod",
            "--workers",
            "2",
        ),
        script=os.path.join(REPO, "tools", "preprocess_data.py"),
    )
    assert proc.returncode == 0, proc.stderr
    assert "manifest:" in proc.stdout and "Traceback" not in proc.stderr
    manifest = load_manifest(str(tmp_path / "data" / "out.manifest.json"))
    assert len(manifest.shards) == 8 and len(manifest.holdout) == 4
    assert manifest.command[:2] == ["megatron-meta", "preprocess"]
    assert sum(s.documents for s in manifest.shards_for("full")) == len(docs) - 4
    assert not [p for p in os.listdir(tmp_path / "data") if ".tmp" in p]


def test_bad_line_in_error_mode_exits_2_with_location_and_no_outputs(tmp_path, docs, tokenizer):
    corpus = write_jsonl(
        str(tmp_path / "news.jsonl"),
        docs[:10],
        ['{"text": "cut off'] + [json.dumps(d.to_json()) for d in docs[10:]],
    )
    proc = _run_cli(_args(corpus, tmp_path / "out", tokenizer, "--workers", "2"))
    assert proc.returncode == 2
    assert "news.jsonl:11" in proc.stderr and "malformed JSON" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert _outputs(tmp_path) == []


BAD_LINES = [
    '{"text": "no closing brace"',  # malformed_json
    json.dumps(
        {"id": "e", "url": "u", "country": "ng", "title": "t", "text": "  "}
    ),  # missing_text
    json.dumps({"id": "c", "url": "u", "country": "Atlantis", "text": "body"}),  # unknown_country
    json.dumps({"id": "m", "url": "u", "text": "body"}),  # missing_country
    json.dumps({"id": "u", "country": "gb", "text": "body"}),  # missing_url
    "[1, 2]",  # malformed_json
]


@pytest.mark.parametrize(
    "index,reason",
    [
        (0, "malformed_json"),
        (1, "missing_text"),
        (2, "unknown_country"),
        (3, "missing_country"),
        (4, "missing_url"),
    ],
)
def test_each_bad_record_in_error_mode(tmp_path, docs, tokenizer, index, reason, capsys):
    corpus = write_jsonl(str(tmp_path / "news.jsonl"), docs[:3], [BAD_LINES[index]])
    assert (
        run_guarded(preprocess_main, _args(corpus, tmp_path / "out", tokenizer), "preprocess") == 2
    )
    err = capsys.readouterr().err
    assert "news.jsonl:4" in err
    assert _outputs(tmp_path) == []


def test_invalid_utf8_is_located(tmp_path, docs, tokenizer, capsys):
    corpus = write_jsonl(str(tmp_path / "news.jsonl"), docs[:2])
    with open(corpus, "ab") as f:
        f.write(b'{"id": "x", "url": "u", "country": "gb", "text": "caf\xe9"}\n')
    assert (
        run_guarded(preprocess_main, _args(corpus, tmp_path / "out", tokenizer), "preprocess") == 2
    )
    assert "news.jsonl:3" in capsys.readouterr().err
    assert _outputs(tmp_path) == []


def test_skip_mode_counts_reasons_in_manifest(tmp_path, docs, tokenizer, capsys):
    untitled = json.dumps({"id": "n", "url": "u", "country": "gb", "text": "body"})
    corpus = write_jsonl(str(tmp_path / "news.jsonl"), docs, BAD_LINES + [untitled])
    with open(corpus, "ab") as f:
        f.write(b'{"id": "x", "url": "u", "country": "gb", "text": "caf\xe9"}\n')
    titled = [d for d in docs if d.title]
    assert (
        preprocess_main(
            _args(
                corpus,
                tmp_path / "out",
                tokenizer,
                "--on-bad-record",
                "skip",
                "--holdout-test",
                "2",
                "--require-title",
            )
        )
        == 0
    )
    assert "skipped records" in capsys.readouterr().out  # the final summary names them too
    manifest = load_manifest(str(tmp_path / "out.manifest.json"))
    assert manifest.skipped == {
        "invalid_utf8": 1,
        "malformed_json": 2,
        "missing_country": 1,
        "missing_text": 1,
        "missing_url": 1,
        "unknown_country": 1,
        "missing_title": 1 + len(docs) - len(titled),
    }
    assert manifest.shards[0].documents == len(titled) - 2


def test_missing_input_file(tmp_path, tokenizer, capsys):
    args = _args(str(tmp_path / "absent.jsonl"), tmp_path / "out", tokenizer)
    assert run_guarded(preprocess_main, args, "preprocess") == 2
    assert "absent.jsonl" in capsys.readouterr().err
    assert _outputs(tmp_path) == []


@pytest.mark.parametrize("workers", [0, 2])
@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_failure_mid_run_leaves_nothing_complete(
    tmp_path, docs, tokenizer, monkeypatch, workers, error
):
    from megatron_meta.preprocess import writer

    corpus = write_jsonl(str(tmp_path / "news.jsonl"), docs)
    (tmp_path / "out.manifest.json").write_text("{}")  # stale manifest of an earlier run survives
    # The main process joins the workers' pieces of the shards; it fails at the third piece.
    original = writer.ShardWriter.append_shard
    calls = []

    def add_then_fail(self, *args):
        calls.append(1)
        if len(calls) == 3:
            raise error("simulated crash")
        original(self, *args)

    monkeypatch.setattr(writer.ShardWriter, "append_shard", add_then_fail)
    args = _args(
        corpus,
        tmp_path / "out",
        tokenizer,
        "--workers",
        str(workers),
        "--split-by",
        "continent",
        "--holdout-test",
        "1",
    )
    with pytest.raises(error):
        preprocess_main(args)
    assert len(calls) == 3
    assert _outputs(tmp_path) == ["out.manifest.json"]  # no .bin/.idx/.npy/.jsonl, no temp files
    assert (tmp_path / "out.manifest.json").read_text() == "{}"


def test_worker_crash_leaves_nothing(tmp_path, docs, tokenizer, monkeypatch):
    from preprocess_fixtures import FailingEncoder

    # The spawned workers receive an encoder that raises (pickled through the pool initializer).
    monkeypatch.setattr(
        "megatron_meta.preprocess.runner.choose_shared_body",
        lambda *a, **k: (False, FailingEncoder()),
    )
    corpus = write_jsonl(str(tmp_path / "news.jsonl"), docs)
    with pytest.raises(ValueError, match="worker died"):
        preprocess_main(_args(corpus, tmp_path / "out", tokenizer, "--workers", "2"))
    assert _outputs(tmp_path) == []


def test_flag_errors(tmp_path, docs, tokenizer, capsys):
    corpus = write_jsonl(str(tmp_path / "news.jsonl"), docs)
    cases = [
        (["--metadata-variants", "full,bogus"], "--metadata-variants"),
        (["--holdout-valid-fraction", "2"], "--holdout-valid-fraction"),
        (["--workers", "-1"], "--workers"),
    ]
    for extra, needle in cases:
        assert (
            run_guarded(preprocess_main, _args(corpus, tmp_path / "out", tokenizer, *extra), "p")
            == 2
        )
        assert needle in capsys.readouterr().err
    args = _args(corpus, tmp_path / "out", str(tmp_path / "nope.model"))
    assert run_guarded(preprocess_main, args, "p") == 2
    assert "nope.model" in capsys.readouterr().err
    assert _outputs(tmp_path) == []
