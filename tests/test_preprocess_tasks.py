"""Workers that read their own pieces of the input: any cut, any number of workers, any input
layout (several files, gz, Parquet, a datasets folder) gives the same bytes as one sequential run;
bad records keep their file and line; --prepend-bos; joining pieces holds the index in blocks."""

import filecmp
import gzip
import json
import os
import shutil
import tracemalloc

import numpy as np
import pytest
from preprocess_fixtures import make_documents, write_jsonl

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.ranges import plan_tasks, read_task
from megatron_meta.corpora.registry import CorpusSpec, iter_documents
from megatron_meta.errors import ConfigError, DataError
from megatron_meta.manifest import load_manifest
from megatron_meta.metadata.formatting import format_document
from megatron_meta.preprocess.holdout import HoldoutConfig
from megatron_meta.preprocess.runner import PreprocessConfig, run_preprocess
from megatron_meta.tokenizer import load_tokenizer

@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The same 60 documents (and 3 bad records) as one JSONL, three JSONL files (one gz)."""
    folder = tmp_path_factory.mktemp("inputs")
    docs = make_documents(60, seed=5)
    lines = [json.dumps(d.to_json(), ensure_ascii=False) for d in docs]
    lines.insert(7, "{not json")
    lines.insert(30, json.dumps({"id": "x", "text": "no country", "url": "u"}))
    lines.append(json.dumps({"id": "y", "country": "ng", "url": "u", "text": " "}))
    one = folder / "one.jsonl"
    one.write_text("\n".join(lines) + "\n", encoding="utf-8")
    a, b, c = folder / "a.jsonl", folder / "b.jsonl.gz", folder / "c.jsonl"
    a.write_text("\n".join(lines[:20]) + "\n", encoding="utf-8")
    with gzip.open(b, "wt", encoding="utf-8") as f:
        f.write("\n".join(lines[20:41]) + "\n")
    c.write_text("\n".join(lines[41:]), encoding="utf-8")  # no newline at the end
    return {"docs": docs, "one": str(one), "several": [str(a), str(b), str(c)]}


def run(out, inputs, toks, name="sp_bpe", **kw):
    kw.setdefault("workers", 0)
    config = PreprocessConfig(
        corpus=CorpusSpec(inputs=list(inputs)),
        output_prefix=os.path.join(str(out), "out"),
        tokenizer_type="SentencePieceTokenizer" if name.startswith("sp") else "HuggingFaceTokenizer",
        tokenizer_model=toks[name],
        variants=kw.pop("variants", ["full", "none"]),
        progress_bar=False,
        on_bad_record=kw.pop("on_bad_record", "skip"),
        **kw,
    )
    return run_preprocess(config)


def same_outputs(dir_a, dir_b, skipped=True):
    names = sorted(os.listdir(dir_a))
    assert names == sorted(os.listdir(dir_b))
    assert any(n.endswith(".bin") for n in names) and not [n for n in names if "tmp" in n]
    for n in names:
        if not n.endswith(".manifest.json"):
            assert filecmp.cmp(os.path.join(dir_a, n), os.path.join(dir_b, n), shallow=False), n
    ma, mb = (load_manifest(os.path.join(d, "out.manifest.json")) for d in (dir_a, dir_b))
    if skipped:
        assert ma.skipped == mb.skipped
    return ma


def test_ranges_read_what_one_pass_reads(files, tmp_path):
    spec = CorpusSpec(inputs=[files["one"]])
    whole_bad, cut_bad = BadRecords("skip"), BadRecords("skip")
    whole = list(iter_documents(spec, whole_bad))
    for target in (1, 700, 5000, 10**9):
        tasks = plan_tasks(spec, target)
        assert (len(tasks) > 10) == (target < 1000)
        bad = BadRecords("skip")
        got = [d for t in tasks for d in read_task(spec, t, bad)]
        assert got == whole and bad.counts == whole_bad.counts
    # Line numbers of bad records (and default ids) are those of the whole file.
    with pytest.raises(DataError, match=r"one.jsonl:8: malformed JSON"):
        for t in plan_tasks(spec, 300):
            list(read_task(spec, t, BadRecords("error")))
    several = CorpusSpec(inputs=files["several"])
    tasks = plan_tasks(several, 500)
    assert [t.path.endswith(".gz") for t in tasks].count(True) == 1  # a gz file is one task
    got = [d for t in tasks for d in read_task(several, t, cut_bad)]
    assert [d.to_json() | {"id": ""} for d in got] == [d.to_json() | {"id": ""} for d in whole]


@pytest.mark.parametrize("layout", ["one", "several"])
def test_any_workers_any_cut_same_bytes(files, toks, tmp_path, layout):
    kw = dict(
        split_by="continent",
        append_eod=True,
        holdout=HoldoutConfig(test_per_region=2, valid_fraction=0.2, seed=3),
    )
    inputs = [files["one"]] if layout == "one" else files["several"]
    ref = run(tmp_path / "ref", [files["one"]], toks, task_bytes=10**9, **kw)  # one job
    assert ref.held_out > 8 and ref.manifest.skipped == {
        "malformed_json": 1, "missing_country": 1, "missing_text": 1,
    }  # fmt: skip
    for workers in (1, 2, 5):
        out = tmp_path / f"w{workers}"
        run(out, inputs, toks, workers=workers, task_bytes=900 * workers, chunk_bytes=1500, **kw)
        same_outputs(tmp_path / "ref", out)
        shutil.rmtree(out)


def test_partitions_of_several_files_merge_to_one_run(files, toks, tmp_path):
    from megatron_meta.preprocess.merge import merge_parts

    kw = dict(split_by="continent", holdout=HoldoutConfig(2, 0.1, 7), task_bytes=700)
    run(tmp_path / "one", files["several"], toks, workers=2, **kw)
    parts = [
        run(tmp_path / f"p{i}", files["several"], toks, partitions=3, partition_index=i,
            workers=i % 2 * 2, **kw).manifest_path
        for i in range(3)
    ]  # fmt: skip
    assert sum(sum(load_manifest(p).skipped.values()) for p in parts) == 3
    merge_parts(parts, str(tmp_path / "merged" / "out"))
    same_outputs(tmp_path / "one", tmp_path / "merged")


def _columnar_inputs(docs, folder):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    records = [d.to_json() for d in docs]
    table = pa.Table.from_pylist(records)
    pq.write_table(table.slice(0, 25), folder / "a.parquet", row_group_size=4)
    pq.write_table(table.slice(25), folder / "b.parquet", row_group_size=7)
    ds = datasets.Dataset.from_list(records)
    ds.save_to_disk(str(folder / "ds"), max_shard_size="20KB")
    return [str(folder / "a.parquet"), str(folder / "b.parquet")], [str(folder / "ds")]


def test_parquet_and_datasets_give_the_jsonl_shards(toks, tmp_path):
    docs = make_documents(48, seed=9)
    jsonl = write_jsonl(str(tmp_path / "c.jsonl"), docs)
    parquet, folder = _columnar_inputs(docs, tmp_path)
    assert len(os.listdir(folder[0])) > 3  # several arrow files
    kw = dict(split_by="continent", append_eod=True, holdout=HoldoutConfig(2, 0.2, 1))
    run(tmp_path / "jsonl", [jsonl], toks, **kw)
    for name, inputs in (("parquet", parquet), ("datasets", folder)):
        for workers, task_bytes in ((0, 10**9), (2, 300)):
            out = tmp_path / f"{name}{workers}"
            run(out, inputs, toks, workers=workers, task_bytes=task_bytes, **kw)
            same_outputs(tmp_path / "jsonl", out)


def test_columnar_bad_records_are_located(toks, tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [d.to_json() for d in make_documents(6)]
    rows[4]["country"] = "Atlantis"
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "x.parquet", row_group_size=2)
    with pytest.raises(DataError, match=r"x.parquet:row 5: unknown country 'Atlantis'"):
        run(tmp_path / "o", [str(tmp_path / "x.parquet")], toks, on_bad_record="error")
    got = run(tmp_path / "s", [str(tmp_path / "x.parquet")], toks, workers=2, task_bytes=1)
    assert got.documents == 5 and got.manifest.skipped == {"unknown_country": 1}
    (tmp_path / "dd").mkdir()
    (tmp_path / "dd" / "dataset_dict.json").write_text("{}")
    (tmp_path / "dd" / "state.json").write_text("{}")
    (tmp_path / "dd" / "dataset_info.json").write_text("{}")
    with pytest.raises(DataError, match="DatasetDict; pass one split"):
        run(tmp_path / "o2", [str(tmp_path / "dd")], toks)


def test_prepend_bos(files, toks, tmp_path):
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    result = run(tmp_path / "b", [files["one"]], toks, prepend_bos=True, workers=2)
    m = load_manifest(result.manifest_path)
    assert m.prepend_bos and not m.append_eod
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    docs = list(iter_documents(CorpusSpec([files["one"]]), BadRecords("skip", log_first=0)))
    for shard in m.shards:
        ds, meta = IndexedDataset(shard.prefix), np.load(shard.metadata_tokens)
        for i, doc in enumerate(docs):
            ids = ds[i].tolist()
            assert ids == [tok.bos] + list(tok.tokenize(format_document(doc, shard.variant)))
        plain = run(tmp_path / "p", [files["one"]], toks, variants=[shard.variant])
        assert np.array_equal(meta, np.load(plain.manifest.shards[0].metadata_tokens) + 1)
        shutil.rmtree(tmp_path / "p")
    with pytest.raises(ConfigError, match="--prepend-bos"):
        run(tmp_path / "h", [files["one"]], toks, name="hf_llama3", prepend_bos=True)


def test_joining_a_large_index_holds_blocks_only(tmp_path):
    """merge and the join of pieces read index arrays through a memory map, in blocks."""
    from megatron_meta.preprocess.writer import ShardWriter

    n = 3_000_000  # documents: 36 MB of index arrays, 12 MB of sidecar
    prefix = str(tmp_path / "big")
    with open(prefix + ".bin", "wb") as f:
        f.write(np.ones(n, dtype=np.uint16).tobytes())
    with open(prefix + ".idx", "wb") as f:
        f.write(b"MMIDIDX\x00\x00" + (1).to_bytes(8, "little") + bytes([8]))
        f.write(n.to_bytes(8, "little") + (n + 1).to_bytes(8, "little"))
        f.write(np.ones(n, dtype=np.int32).tobytes())
        f.write((np.arange(n, dtype=np.int64) * 2).tobytes())
        f.write(np.arange(n + 1, dtype=np.int64).tobytes())
    np.save(prefix + ".metadata_tokens.npy", np.zeros(n, dtype=np.int32))
    writer = ShardWriter(str(tmp_path / "joined"), np.uint16)
    tracemalloc.start()
    writer.append_shard(prefix)
    writer.append_shard(prefix)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    for tmp, final in writer.finalize():
        os.replace(tmp, final)
    assert peak < 24 * 2**20, peak  # a few 1M-entry blocks, not the 96 MB of arrays
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    ds = IndexedDataset(str(tmp_path / "joined"))
    assert len(ds) == 2 * n and ds.document_indices[-1] == 2 * n
    assert ds[n + 5].tolist() == [1] and writer.tokens == 2 * n


def test_now_read_in_tasks_one_a_text_file_same_bytes_and_parts(toks, tmp_path):
    """NOW: one read task a text file, read by the workers; the same bytes as shards written from
    one sequential read of the corpus, for 0/1/2/5 workers and for parts merged, with ids repeated
    across and within text files dropped once and a bad sources row counted once."""
    from corpus_fixtures import make_now_folder

    from megatron_meta.corpora.cleaning import Cleaning
    from megatron_meta.preprocess.merge import merge_parts

    now = str(make_now_folder(
        tmp_path,
        # ke is read before ng: its copy of ng's article 1003 is kept and ng's own dropped.
        extra_entries={"24-01-ke.txt": ["@@1003 An earlier copy of the Lagos article.",
                                        "@@1005 The Kenyan article again, in its own file."]},
        extra_sources_lines=["4242\tonly two fields"],
    ))  # fmt: skip
    spec = CorpusSpec([now])
    tasks = plan_tasks(spec, 100)
    assert [t.reader for t in tasks] == ["now"] * 7  # au, gb, in, ke, ng, us1, us2
    assert tasks[3].path.endswith("24-01-ke.txt") and tasks[4].path.endswith("24-01-ng.txt")
    bad = BadRecords("skip")
    sequential = list(iter_documents(spec, bad))
    assert bad.summary() == {"duplicate_id": 2, "excluded_country": 1, "malformed_sources_row": 1}
    assert [d.id for d in sequential].count("1003") == 1
    # The oracle: the sequentially read (and cleaned) documents as JSONL, written without cleaning.
    oracle = write_jsonl(str(tmp_path / "sequential.jsonl"), sequential)
    kw = dict(holdout=HoldoutConfig(1, 0.2, 4), append_eod=True)
    config = PreprocessConfig(
        corpus=CorpusSpec([oracle], cleaning=Cleaning("off")),
        output_prefix=str(tmp_path / "ref" / "out"),
        tokenizer_type="SentencePieceTokenizer", tokenizer_model=toks["sp_bpe"],
        variants=["full", "none"], progress_bar=False, on_bad_record="skip", **kw,
    )  # fmt: skip
    ref = run_preprocess(config)
    assert ref.documents + ref.held_out == len(sequential) and ref.held_out >= 1
    for workers in (0, 1, 2, 5):
        out = tmp_path / f"w{workers}"
        got = run(out, [now], toks, workers=workers, **kw)
        assert got.manifest.skipped == bad.summary()  # the oracle's input had none of them
        same_outputs(tmp_path / "ref", out, skipped=False)
    parts = [
        run(tmp_path / f"p{i}", [now], toks, partitions=2, partition_index=i, workers=i * 2,
            **kw).manifest_path
        for i in range(2)
    ]  # fmt: skip
    merged = merge_parts(parts, str(tmp_path / "merged" / "out"))
    assert merged.skipped == bad.summary()
    same_outputs(tmp_path / "ref", tmp_path / "merged", skipped=False)


def test_now_bad_record_in_a_task_stops_the_run_with_its_location(toks, tmp_path):
    from corpus_fixtures import make_now_folder

    now = str(make_now_folder(tmp_path, extra_entries={"24-01-in.txt": ["@@999 no sources row"]}))
    for workers in (0, 2):
        out = tmp_path / f"e{workers}"
        with pytest.raises(DataError, match=r"24-01-in.txt \(textID 999\): no row with this textID"):
            run(out, [now], toks, workers=workers, on_bad_record="error")
        assert not [n for n in os.listdir(out) if not n.startswith(".")]  # nothing half-written


def test_now_workers_load_the_sources_rows_once_shared_after_fork(toks, tmp_path):
    """The main process loads NOW's sources rows before it forks its workers; a worker that was
    not forked (or a later run on changed files) loads them itself."""
    from corpus_fixtures import make_now_folder

    from megatron_meta.corpora import now as now_module
    from megatron_meta.corpora.registry import now_corpus

    folder = str(make_now_folder(tmp_path))
    spec = CorpusSpec([folder])
    first = now_corpus(spec, BadRecords("skip"))
    assert now_corpus(spec, BadRecords("skip")) is first  # cached in this process
    sources = os.path.join(folder, "now-sources-2024.txt")
    with open(sources, "ab") as f:
        f.write(b"4243\tmalformed\r\n")
    os.utime(sources, ns=(1, 1))  # a changed file is loaded again, its bad rows counted
    bad = BadRecords("skip")
    again = now_corpus(spec, bad)
    assert again is not first and bad.summary() == {"malformed_sources_row": 1}
    bad = BadRecords("skip")
    assert now_corpus(spec, bad) is again and bad.summary() == {"malformed_sources_row": 1}
    now_module.release_corpora()  # as in a worker started from a fresh interpreter
    assert run(tmp_path / "fresh", [folder], toks, workers=0).documents > 3
    assert not now_module._CACHED  # released after the run: the rows may take gigabytes


def test_workers_clean_html_like_the_main_reader(toks, tmp_path):
    """--clean-text applies to documents the workers read (JSONL ranges), with the same result for
    any number of workers; a text that cleaning empties is counted, and ids are kept as given."""
    from megatron_meta.corpora.cleaning import Cleaning, clean_text

    docs = make_documents(12, seed=9)
    rows = [d.to_json() for d in docs]
    rows[2]["text"] = "<p>First &amp; second</p><p>Third&#8217;s <b>bold</b> line</p>"
    rows[5]["text"] = "<div><br/></div>"  # nothing left after cleaning
    rows[7]["id"] = rows[6]["id"]  # a repeated id in a record format: kept
    path = tmp_path / "html.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n", encoding="utf-8")
    tok = load_tokenizer("SentencePieceTokenizer", toks["sp_bpe"])
    from megatron.core.datasets.indexed_dataset import IndexedDataset

    for workers in (0, 2):
        spec = CorpusSpec(inputs=[str(path)], cleaning=Cleaning("html"))
        out = tmp_path / f"w{workers}"
        config = PreprocessConfig(
            corpus=spec, output_prefix=str(out / "out"), tokenizer_type="SentencePieceTokenizer",
            tokenizer_model=toks["sp_bpe"], variants=["none"], progress_bar=False,
            on_bad_record="skip", workers=workers, task_bytes=200,
        )
        result = run_preprocess(config)
        m = load_manifest(result.manifest_path)
        assert m.skipped.get("missing_text") == 1 and "duplicate_id" not in m.skipped
        ds = IndexedDataset(m.shards[0].prefix)
        assert len(ds) == 11
        kept = [d for i, d in enumerate(docs) if i != 5]
        texts = [clean_text(rows[i]["text"], "html") for i in range(12) if i != 5]
        assert texts[2] == "First & second\n\nThird\u2019s bold line"
        for i, (doc, text) in enumerate(zip(kept, texts)):
            doc = doc.__class__(**{**doc.__dict__, "text": text})
            want = list(tok.tokenize(format_document(doc, "none"))) + [tok.eod] * m.append_eod
            assert ds[i].tolist() == want, i
