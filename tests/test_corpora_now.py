"""NOW reader on a NOW-format folder the test builds: zips, us1..us5, latin-1, masking, bad input."""

import zipfile

import pytest
from corpus_fixtures import MASK, NOW_ARTICLES, make_now_folder

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.now import read_now
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import CorpusSpec, detect_format, iter_documents
from megatron_meta.errors import DataError
from megatron_meta.metadata.regions import RegionTable

KEPT = [a for a in NOW_ARTICLES if a.continent]


def expected_documents(articles=KEPT):
    return {
        a.text_id: Document(a.text_id, a.url, a.country, a.continent, a.title, a.text, "24-01-05")
        for a in articles
    }


def read(paths, mode="skip", regions=None, countries=None):
    bad = BadRecords(mode)
    docs = list(read_now([str(p) for p in paths], regions or RegionTable.default(), bad, countries))
    return docs, bad


def test_folder_reads_every_kept_article_exactly(tmp_path):
    root = make_now_folder(tmp_path)
    docs, bad = read([root], mode="error")
    assert {d.id: d for d in docs} == expected_documents()
    assert len(docs) == len(KEPT)
    # au is not in the paper's mapping: dropped and counted, not an error
    assert bad.summary() == {"excluded_country": 1}


def test_details_latin1_masking_split_us_files(tmp_path):
    docs = {d.id: d for d in read([make_now_folder(tmp_path)], mode="error")[0]}
    assert docs["1003"].title == "Café owners in Lagos celebrate São Tomé visit"  # ISO-8859-1 sources
    assert docs["1004"].text == "Employers in Britain saw naïve mistakes on résumés."  # latin-1 text file
    assert MASK in docs["1001"].text and "@ @ @ @ @ @ @ @ @ @ They expect more." in docs["1003"].text
    assert docs["1001"].country == docs["1002"].country == "us"  # from 24-01-us1.txt and us2.txt
    assert docs["1005"].title == "" and docs["1005"].country == "ke"  # sources row without title
    assert docs["1006"].text == "Air quality fell in Delhi.\nSchools closed for a day."


def test_zip_and_files_given_directly(tmp_path):
    root = make_now_folder(tmp_path)
    docs, _ = read([root / "text" / "24-01-text.zip", root / "now-sources-2024.txt", root / "24-01-in.txt"])
    assert sorted(d.id for d in docs) == ["1001", "1002", "1003", "1004", "1006"]
    # Sources can come zipped too.
    with zipfile.ZipFile(tmp_path / "sources.zip", "w") as zf:
        zf.write(root / "now-sources-2024.txt", "now-sources-2024.txt")
    docs, _ = read([root / "text" / "24-01-text.zip", tmp_path / "sources.zip"])
    assert sorted(d.id for d in docs) == ["1001", "1002", "1003", "1004"]


def test_us1_to_us5_files(tmp_path):
    extra = {f"24-01-us{i}.txt": [f"@@{2000 + i} US part {i}."] for i in range(3, 6)}
    rows = [f"{2000 + i}\t3\t24-01-05\tUS\tx.com\thttps://x.com/{i}\tPart {i}" for i in range(3, 6)]
    root = make_now_folder(tmp_path, extra_entries=extra, extra_sources_lines=rows)
    docs = {d.id: d for d in read([root], mode="error")[0]}
    for i in range(3, 6):
        assert docs[str(2000 + i)] == Document(
            str(2000 + i), f"https://x.com/{i}", "us", "America", f"Part {i}", f"US part {i}.", "24-01-05")


def test_missing_sources_row(tmp_path):
    root = make_now_folder(tmp_path, extra_entries={"24-01-ng.txt": ["@@999 An entry nobody listed."]})
    with pytest.raises(DataError, match=r"24-01-text\.zip!24-01/24-01-ng\.txt \(textID 999\)"):
        read([root], mode="error")
    docs, bad = read([root], mode="skip")
    assert len(docs) == len(KEPT)
    assert bad.summary() == {"excluded_country": 1, "no_sources_row": 1}


def test_unknown_country_and_malformed_row(tmp_path):
    rows = ["3001\t3\t24-01-05\tNarnia\tn.com\thttps://n.com/a\tT", "3002\t3\t24-01-05\tGB"]
    root = make_now_folder(tmp_path, extra_entries={"24-01-in.txt": ["@@3001 Text."]},
                           extra_sources_lines=rows)
    with pytest.raises(DataError, match=r"now-sources-2024\.txt:\d+: expected 7 tab-separated"):
        read([root], mode="error")
    docs, bad = read([root], mode="skip")
    assert len(docs) == len(KEPT)
    assert bad.summary() == {"excluded_country": 1, "malformed_sources_row": 1, "unknown_country": 1}


def test_empty_entry_and_missing_url(tmp_path):
    rows = ["3003\t3\t24-01-05\tIN\tn.com\t\tNo URL"]
    root = make_now_folder(tmp_path, extra_entries={"24-01-in.txt": ["@@3003 Text.", "@@1099"]},
                           extra_sources_lines=rows + ["1099\t0\t24-01-05\tIN\tn.com\thttps://n.com/e\tE"])
    with pytest.raises(DataError, match=r"24-01-in\.txt \(textID 3003\): the sources row has no URL"):
        read([root], mode="error")
    _, bad = read([root], mode="skip")
    assert bad.summary() == {"excluded_country": 1, "missing_url": 1, "missing_text": 1}


def test_countries_and_continent_map(tmp_path):
    root = make_now_folder(tmp_path)
    docs, bad = read([root], countries={"ng", "ke"})
    assert sorted(d.id for d in docs) == ["1003", "1005"]
    assert bad.summary() == {"excluded_country": 5}
    # A continent map naming au brings Australia back, with the map's continent.
    cmap = tmp_path / "map.tsv"
    cmap.write_text("au\tOceania\n")
    docs, bad = read([root], regions=RegionTable.from_file(str(cmap)))
    assert {d.id: d.continent for d in docs}["1007"] == "Oceania"
    assert bad.summary() == {}


def test_inputs_without_sources_or_text(tmp_path):
    root = make_now_folder(tmp_path)
    with pytest.raises(DataError, match="no NOW sources file"):
        read([root / "text" / "24-01-text.zip"])
    with pytest.raises(DataError, match="no NOW text files"):
        read([root / "now-sources-2024.txt"])
    with pytest.raises(DataError, match="does-not-exist"):
        read([tmp_path / "does-not-exist"])
    bad_zip = tmp_path / "broken.zip"
    bad_zip.write_bytes(b"not a zip")
    with pytest.raises(DataError, match="broken.zip"):
        read([bad_zip, root])


def test_registry_detects_and_reads_now(tmp_path):
    root = make_now_folder(tmp_path)
    assert detect_format([str(root)]) == "now"
    bad = BadRecords("error")
    docs = list(iter_documents(CorpusSpec(inputs=[str(root)]), bad))
    assert {d.id for d in docs} == set(expected_documents())
    docs = list(iter_documents(CorpusSpec(inputs=[str(root)], format="now", countries={"gb"}), BadRecords("skip")))
    assert [d.id for d in docs] == ["1004"]


def test_country_comes_from_sources_when_the_file_name_has_none(tmp_path):
    # A text file whose name carries no country: each entry's country comes from its sources row,
    # and an entry of a dropped country is excluded (counted), not reported as lacking a row.
    rows = ["4001\t2\t24-01-05\tAU\ta.au\thttps://a.au/x\tAussie", "4002\t2\t24-01-05\tGhana\tg.gh\thttps://g.gh/y\tAccra"]
    root = make_now_folder(tmp_path, extra_entries={"misc.txt": ["@@4001 Dropped.", "@@4002 Kept."]},
                           extra_sources_lines=rows)
    docs, bad = read([root], mode="error")
    by_id = {d.id: d for d in docs}
    assert "4001" not in by_id
    assert by_id["4002"] == Document("4002", "https://g.gh/y", "gh", "Africa", "Accra", "Kept.", "24-01-05")
    assert bad.summary() == {"excluded_country": 2}
