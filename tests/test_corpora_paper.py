"""The paper protocol's reading of NOW (FACTS 1a) on crafted files in both sources layouts:
HTML and entities, duplicates, title-less rows, us1..us5, header lines, country from file names."""

import argparse

import pytest

from megatron_meta.corpora.bad_records import BadRecords
from megatron_meta.corpora.cleaning import clean_text
from megatron_meta.corpora.records import Document
from megatron_meta.corpora.registry import add_corpus_arguments, corpus_spec_from_args, iter_documents

# The authors' layout: 5 whitespace fields, a "Source Line" header, titles with spaces.
SPACE5 = (
    "Source Line: textID date country url title\n"
    "3001 24-01-05 US https://www.nytimes.com/a.html New year   in New York\n"
    "3002 24-01-05 US https://www.latimes.com/b.html\n"  # no title
    "3003 24-01-06 NG https://punchng.com/c Lagos &amp; Abuja\n"
    "3004 24-01-06 GB https://www.bbc.co.uk/d Filed under GB, text in a Kenyan file\n"
)
# The distributor's layout: 7 tab-separated fields with a header line.
TAB7 = (
    "textID\t#words\tdate\tcountry\twebsite\turl\ttitle\n"
    "4001\t12\t24-02-01\tIN\tthehindu.com\thttps://www.thehindu.com/e\tMonsoon  arrives\n"
    "4002\t9\t24-02-01\tIN\tthehindu.com\thttps://www.thehindu.com/f\t\n"  # empty title
    "4003\t9\t24-02-02\tAU\tabc.net.au\thttps://www.abc.net.au/g\tSydney\n"
)
TEXTS = {
    "24-01-us3.txt": "@@3001 <h2>Lights</h2><p>Crowds &amp; lights &#8217;24</p>\n<p>Second  line</p>"
                     "<b>bold</b>end\n@@3002 No title here.\n",
    "24-01-ng.txt": "@@3003 Traffic &lt;b&gt;eased&lt;/b&gt; today.\n@@3003 The same id again.\n",
    "24-01-ke.txt": "@@3004 Nairobi news.\n",
    "24-02-in.txt": "@@4001 Rain came\n\n\nearly.\n@@4002 Untitled Indian item.\n",
    "24-02-au.txt": "@@4003 Sydney text.\n",
}


def make_folder(tmp_path):
    root = tmp_path / "now"
    root.mkdir()
    (root / "2024-sources.txt").write_bytes(SPACE5.encode("latin-1"))
    (root / "sources-24-02.txt").write_bytes(TAB7.encode("latin-1"))
    for name, text in TEXTS.items():
        (root / name).write_text(text, encoding="utf-8")
    return root


def read(root, *flags):
    parser = argparse.ArgumentParser()
    add_corpus_arguments(parser)
    spec = corpus_spec_from_args(parser.parse_args(["--input", str(root), *flags]))
    bad = BadRecords("skip")
    return {d.id: d for d in iter_documents(spec, bad)}, bad.summary()


def test_paper_protocol_documents_and_counts(tmp_path):
    docs, counts = read(make_folder(tmp_path), "--protocol", "paper")
    assert docs == {
        "3001": Document("3001", "https://www.nytimes.com/a.html", "us", "America",
                         "New year   in New York", "Lights Crowds & lights \u201924 Second line bold end",
                         "24-01-05"),
        "3003": Document("3003", "https://punchng.com/c", "ng", "Africa", "Lagos &amp; Abuja",
                         "Traffic eased today.", "24-01-06"),
        # the country is the file's (ke), not the row's (GB)
        "3004": Document("3004", "https://www.bbc.co.uk/d", "ke", "Africa",
                         "Filed under GB, text in a Kenyan file", "Nairobi news.", "24-01-06"),
        "4001": Document("4001", "https://www.thehindu.com/e", "in", "Asia", "Monsoon  arrives",
                         "Rain came early.", "24-02-01"),
    }
    # 3002 and 4002 have no title; the second 3003 repeats an id; 4003 is au (left out).
    assert counts == {"untitled": 2, "duplicate_id": 1, "excluded_country": 1}


def test_our_defaults_keep_titleless_rows_paragraphs_and_the_row_country(tmp_path):
    docs, counts = read(make_folder(tmp_path))
    assert sorted(docs) == ["3001", "3002", "3003", "3004", "4001", "4002"]
    assert docs["3001"].text == "Lights\n\nCrowds & lights \u201924\n\nSecond line\nbold end"
    assert docs["3002"].title == "" and docs["3002"].country == "us"  # from 24-01-us3.txt's row
    assert docs["3004"].country == "gb"  # the sources row's country
    assert docs["4001"].text == "Rain came\n\n\nearly."  # no HTML: left exactly as read
    assert counts == {"duplicate_id": 1, "excluded_country": 1}


def test_flags_override_the_protocol(tmp_path):
    docs, _ = read(make_folder(tmp_path), "--protocol", "paper", "--clean-text", "off",
                   "--now-country", "sources")
    assert docs["3004"].country == "gb"
    assert docs["3001"].text.startswith("<h2>Lights</h2>")


@pytest.mark.parametrize("text, one_line, html", [
    ("a &amp; b", "a & b", "a & b"),
    ("x<p>y</p>z", "x y z", "x\ny\nz"),
    ("<h1>T</h1>\n\n\n<div>b</div>", "T b", "T\n\nb"),
    ("plain  text\n\nkept", "plain text kept", "plain  text\n\nkept"),
    ("&lt;i&gt;gone&lt;/i&gt;", "gone", "gone"),
])
def test_clean_text_modes(text, one_line, html):
    assert clean_text(text, "one-line") == one_line
    assert clean_text(text, "html") == html
    assert clean_text(text, "off") == text
