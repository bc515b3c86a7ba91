"""JSONL reader (every bad-input case, both --on-bad-record modes) and the corpus registry."""

import argparse
import gzip
import json

import pytest
from corpus_fixtures import write_jsonl

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.jsonl import JsonKeys, read_jsonl
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import (
    CorpusSpec,
    add_corpus_arguments,
    corpus_spec_from_args,
    detect_format,
    iter_documents,
)
from megatron_meta.errors import ConfigError, DataError
from megatron_meta.metadata.regions import RegionTable

GOOD = {"id": "a1", "url": "https://punchng.com/x", "country": "NG", "title": "Headline", "text": "Body."}


def read(paths, mode="skip", keys=None, regions=None):
    bad = BadRecords(mode)
    docs = list(read_jsonl([str(p) for p in paths], keys or JsonKeys(), regions or RegionTable.default(), bad))
    return docs, bad


def test_good_records_are_normalized(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        GOOD,
        {"url": "https://cnn.com/a", "country": "United States", "title": "T2", "text": "B2",
         "date": "2017-02-07"},
        {"url": "https://bbc.co.uk/a", "country": "U.K.", "continent": "British Isles", "text": "  B3\n"},
        "",  # blank lines are ignored, not bad
        {"url": "https://x.in/a", "country": "ind", "title": None, "text": "B4", "id": 17},
    ])
    docs, bad = read([path], mode="error")
    assert docs == [
        Document("a1", "https://punchng.com/x", "ng", "Africa", "Headline", "Body."),
        Document("c.jsonl:2", "https://cnn.com/a", "us", "America", "T2", "B2", "2017-02-07"),
        # the record's own continent wins; text is kept exactly; no title is allowed
        Document("c.jsonl:3", "https://bbc.co.uk/a", "gb", "British Isles", "", "  B3\n"),
        Document("17", "https://x.in/a", "in", "Asia", "", "B4"),
    ]
    assert bad.summary() == {}


def test_gzip_and_custom_keys(tmp_path):
    keys = JsonKeys(text="body", url="link", country="cc", continent="region", title="headline", id="doc")
    path = write_jsonl(tmp_path / "c.jsonl.gz", [
        {"doc": "x", "link": "https://rte.ie/a", "cc": "ie", "headline": "H", "body": "Text é"},
    ])
    docs, _ = read([path], mode="error", keys=keys)
    assert docs == [Document("x", "https://rte.ie/a", "ie", "Europe", "H", "Text é")]


def test_corpus_without_urls_or_titles(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [{"country": "ke", "text": "B", "title": "ignored"}])
    docs, _ = read([path], mode="error", keys=JsonKeys(url="", title=""))
    assert (docs[0].url, docs[0].title, docs[0].country) == ("", "", "ke")


BAD_LINES = [
    ("malformed_json", b'{"text": "unterminated'),
    ("malformed_json", b'["a list", "not an object"]'),
    ("missing_text", json.dumps({**GOOD, "text": ""}).encode()),
    ("missing_text", json.dumps({**GOOD, "text": "  \n "}).encode()),
    ("missing_text", json.dumps({k: v for k, v in GOOD.items() if k != "text"}).encode()),
    ("missing_text", json.dumps({**GOOD, "text": 5}).encode()),
    ("missing_url", json.dumps({k: v for k, v in GOOD.items() if k != "url"}).encode()),
    ("missing_url", json.dumps({**GOOD, "url": ""}).encode()),
    ("missing_country", json.dumps({k: v for k, v in GOOD.items() if k != "country"}).encode()),
    ("missing_country", json.dumps({**GOOD, "country": None}).encode()),
    ("unknown_country", json.dumps({**GOOD, "country": "Narnia"}).encode()),
    ("invalid_utf8", b'{"url": "u", "country": "ng", "text": "caf\xe9"}'),
]


@pytest.mark.parametrize("reason, line", BAD_LINES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_LINES)])
def test_bad_line_error_mode_names_file_and_line(tmp_path, reason, line):
    path = write_jsonl(tmp_path / "c.jsonl", [GOOD, line, GOOD])
    with pytest.raises(DataError, match=rf"{path}:2: .*--on-bad-record skip"):
        read([path], mode="error")


@pytest.mark.parametrize("reason, line", BAD_LINES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BAD_LINES)])
def test_bad_line_skip_mode_counts_and_keeps_the_rest(tmp_path, reason, line):
    path = write_jsonl(tmp_path / "c.jsonl", [GOOD, line, {**GOOD, "id": "a3"}])
    docs, bad = read([path], mode="skip")
    assert [d.id for d in docs] == ["a1", "a3"]
    assert bad.summary() == {reason: 1}


def test_missing_title_only_bad_when_required(tmp_path):
    untitled = {k: v for k, v in GOOD.items() if k != "title"}
    path = write_jsonl(tmp_path / "c.jsonl", [GOOD, untitled, {**GOOD, "title": " "}])
    docs, bad = read([path], mode="error")
    assert [d.title for d in docs] == ["Headline", "", ""]
    keys = JsonKeys(require_title=True)
    with pytest.raises(DataError, match=rf"{path}:2: title key 'title' is missing"):
        read([path], mode="error", keys=keys)
    docs, bad = read([path], mode="skip", keys=keys)
    assert len(docs) == 1 and bad.summary() == {"missing_title": 2}


@pytest.mark.parametrize("mode", ["error", "skip"])
def test_unreadable_file_is_always_an_error(tmp_path, mode):
    missing = tmp_path / "missing.jsonl"
    with pytest.raises(DataError, match="missing.jsonl"):
        read([missing], mode=mode)
    not_gzip = tmp_path / "fake.jsonl.gz"
    not_gzip.write_bytes(b'{"text": "plain, not gzip"}\n')
    with pytest.raises(DataError, match="fake.jsonl.gz"):
        read([not_gzip], mode=mode)
    truncated = tmp_path / "cut.jsonl.gz"
    truncated.write_bytes(gzip.compress(json.dumps(GOOD).encode() * 50)[:40])
    with pytest.raises(DataError, match="cut.jsonl.gz"):
        read([truncated], mode=mode)


def test_several_files_stream_in_order(tmp_path):
    a = write_jsonl(tmp_path / "a.jsonl", [{**GOOD, "id": "1"}])
    b = write_jsonl(tmp_path / "b.jsonl.gz", [{**GOOD, "id": "2"}, {**GOOD, "id": "3"}])
    docs, _ = read([a, b], mode="error")
    assert [d.id for d in docs] == ["1", "2", "3"]


# --- registry: flags, auto-detection, --continent-map, --countries -------------------------


def parse(argv):
    parser = argparse.ArgumentParser()
    add_corpus_arguments(parser)
    return corpus_spec_from_args(parser.parse_args(argv))


def test_flags_build_spec(tmp_path):
    spec = parse(["--input", "a.jsonl", "b.jsonl", "--json-keys", "content", "--url-key", "link",
                  "--country-key", "cc", "--continent-key", "region", "--title-key", "headline",
                  "--id-key", "doc", "--countries", "NG,uk, us"])
    assert spec.inputs == ["a.jsonl", "b.jsonl"]
    assert spec.format == "auto"
    assert spec.keys == JsonKeys(text="content", url="link", country="cc", continent="region",
                                 title="headline", id="doc")
    assert spec.countries == {"ng", "gb", "us"}
    assert parse(["--input", "x.jsonl"]).keys == JsonKeys()


def test_flag_errors():
    with pytest.raises(ConfigError, match="exactly one text key"):
        parse(["--input", "a.jsonl", "--json-keys", "text", "title"])
    with pytest.raises(ConfigError, match="--countries: unknown code.*zz"):
        parse(["--input", "a.jsonl", "--countries", "ng,zz"])


def test_auto_detection(tmp_path):
    (tmp_path / "now").mkdir()
    assert detect_format(["a.jsonl", "b.json.gz", "c.jsonl.gz", "d.json"]) == "jsonl"
    assert detect_format([str(tmp_path / "now")]) == "now"
    assert detect_format(["24-01-text.zip", "now-sources-2024.txt"]) == "now"
    assert detect_format(["news-articles"]) == "news-articles"
    assert detect_format(["/cache/NewsArticles.zip"]) == "news-articles"
    assert detect_format(["/cache/News100.zip"]) == "news-articles"
    with pytest.raises(ConfigError, match="mixes formats"):
        detect_format(["a.jsonl", "24-01-text.zip"])
    assert detect_format(["a.parquet", "b.parquet"]) == "parquet"
    with pytest.raises(ConfigError, match="--input-format"):
        detect_format(["corpus.xml"])


def test_iter_documents_jsonl_with_continent_map_and_countries(tmp_path):
    path = write_jsonl(tmp_path / "c.jsonl", [
        GOOD,
        {**GOOD, "id": "a2", "country": "USA"},
        {**GOOD, "id": "a3", "country": "Mexico"},
    ])
    cmap = tmp_path / "map.tsv"
    cmap.write_text("us\tNorth America\nmx\tNorth America\n")
    bad = BadRecords("error")
    spec = CorpusSpec(inputs=[path], continent_map=str(cmap))
    docs = list(iter_documents(spec, bad))
    assert [(d.country, d.continent) for d in docs] == [
        ("ng", "Africa"), ("us", "North America"), ("mx", "North America")]
    spec = CorpusSpec(inputs=[path], format="jsonl", countries={"us", "mx"})
    docs = list(iter_documents(spec, bad))
    assert [d.id for d in docs] == ["a2", "a3"]
    assert bad.summary() == {"excluded_country": 1}


def test_truncated_gzip_names_the_line_after_the_last_complete_one(tmp_path):
    line = (json.dumps(GOOD) + "\n").encode()
    data = gzip.compress(line * 200)
    cut = tmp_path / "cut.jsonl.gz"
    cut.write_bytes(data[: len(data) - 20])  # the stream ends early, after some whole lines
    got = []
    with pytest.raises(DataError, match=r"cut\.jsonl\.gz:\d+: cannot read") as info:
        for doc in read_jsonl([str(cut)], JsonKeys(), RegionTable.default(), BadRecords("error")):
            got.append(doc)
    lineno = int(str(info.value).split(".gz:")[1].split(":")[0])
    assert 0 < len(got) == lineno - 1 < 200
