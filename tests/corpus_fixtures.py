"""Small corpora written by tests themselves: JSONL files, a NOW-format folder, sample documents.

Other test modules import these helpers (``from corpus_fixtures import ...``; tests/ is on
pytest's path through rootdir conftest).
"""

from __future__ import annotations

import dataclasses
import gzip
import json
import os
import pathlib
import zipfile
from typing import Any, Dict, Iterable, List, Sequence, Union

from megatron_meta.corpora.records import Document

MASK = "@ @ @ @ @ @ @ @ @ @"


def write_jsonl(path: Union[str, os.PathLike], records: Iterable[Union[Dict[str, Any], str, bytes]]) -> str:
    """Write one record a line; dicts are JSON-encoded, str/bytes written verbatim (bad lines).

    A path ending in ``.gz`` is gzip-compressed. Returns the path as a string.
    """
    path = str(path)
    lines: List[bytes] = []
    for record in records:
        if isinstance(record, bytes):
            lines.append(record)
        elif isinstance(record, str):
            lines.append(record.encode("utf-8"))
        else:
            lines.append(json.dumps(record, ensure_ascii=False).encode("utf-8"))
    data = b"".join(line + b"\n" for line in lines)
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(data)
    return path


def sample_documents() -> List[Document]:
    """One document per paper continent (and one untitled), with realistic metadata."""
    return [
        Document("1", "https://www.vanguardngr.com/2024/01/lagos-traffic", "ng", "Africa",
                 "Lagos traffic eases", "Commuters in Lagos reported shorter trips on Monday.", "24-01-08"),
        Document("2", "https://www.thehindu.com/news/cities/monsoon", "in", "Asia",
                 "Monsoon arrives early", "The monsoon reached Kerala two days early this year."),
        Document("3", "http://www.rte.ie/news/2017/0207/budget.html", "ie", "Europe",
                 "Budget talks resume", "Ministers met in Dublin to discuss the budget."),
        Document("4", "https://www.cnn.com/2017/02/07/politics/vote", "us", "America",
                 "Senate vote", "The Senate voted 51-50 on Tuesday.\nA second paragraph."),
        Document("5", "https://www.jamaica-gleaner.com/article/news", "jm", "America",
                 "", "An untitled item: the body is CONTENT alone."),
    ]


@dataclasses.dataclass
class NowArticle:
    """One article of the fixture: its sources row and the text file it lives in."""

    text_id: str
    sources_country: str  # as written in the sources file ("US", "GB", "Nigeria"...)
    country: str  # expected normalized code
    continent: str  # expected continent ("" when the document is not expected to be read)
    url: str
    title: str
    text: str
    text_file: str  # e.g. "24-01-us1.txt"


NOW_ARTICLES: List[NowArticle] = [
    NowArticle("1001", "US", "us", "America", "https://www.nytimes.com/2024/01/01/a.html",
               "New year in New York", f"Crowds gathered in Times Square {MASK} as the ball dropped.",
               "24-01-us1.txt"),
    NowArticle("1002", "US", "us", "America", "https://www.latimes.com/2024/01/02/b.html",
               "Rain in Los Angeles", "Storms brought heavy rain to the city.", "24-01-us2.txt"),
    NowArticle("1003", "NG", "ng", "Africa", "https://punchng.com/lagos-cafe",
               "Café owners in Lagos celebrate São Tomé visit",
               "Owners of cafés said business was good. @ @ @ @ @ @ @ @ @ @ They expect more.",
               "24-01-ng.txt"),
    NowArticle("1004", "GB", "gb", "Europe", "https://www.bbc.co.uk/news/uk-1",
               "Naïve résumé errors", "Employers in Britain saw naïve mistakes on résumés.",
               "24-01-gb.txt"),
    NowArticle("1005", "Kenya", "ke", "Africa", "https://nation.africa/kenya/news/x",
               "", "An article whose sources row has no title.", "24-01-ke.txt"),
    NowArticle("1006", "IN", "in", "Asia", "https://www.thehindu.com/news/y",
               "Delhi smog", "Air quality fell in Delhi.\nSchools closed for a day.", "24-01-in.txt"),
    NowArticle("1007", "AU", "au", "", "https://www.smh.com.au/z",
               "Sydney heat", "Dropped: Australia is not in the paper's mapping.", "24-01-au.txt"),
]

# Text files written latin-1 (the rest UTF-8): NOW's older text files are ISO-8859-1.
LATIN1_TEXT_FILES = {"24-01-gb.txt"}
# Text files put into the zip; the rest are loose files in the folder.
ZIPPED_TEXT_FILES = {"24-01-us1.txt", "24-01-us2.txt", "24-01-ng.txt", "24-01-gb.txt"}


def _text_file_bytes(name: str, articles: Sequence[NowArticle], extra: Sequence[str]) -> bytes:
    lines = ["", *(f"@@{a.text_id} {a.text}" for a in articles if a.text_file == name), *extra]
    encoding = "latin-1" if name in LATIN1_TEXT_FILES else "utf-8"
    return "\n".join(lines).encode(encoding) + b"\n"


def make_now_folder(
    tmp_path: Union[str, os.PathLike],
    articles: Sequence[NowArticle] = NOW_ARTICLES,
    extra_entries: Dict[str, Sequence[str]] | None = None,
    extra_sources_lines: Sequence[str] = (),
) -> pathlib.Path:
    """A NOW-format folder as users receive it.

    Layout: ``now/now-sources-2024.txt`` (ISO-8859-1, header lines), ``now/text/24-01-text.zip``
    (the US split us1/us2, ng, gb in latin-1) and loose ``now/24-01-{ke,in,au}.txt`` files.
    ``extra_entries`` maps a text file name to raw extra lines (e.g. ``"@@999 no sources row"``);
    ``extra_sources_lines`` are appended verbatim to the sources file.
    """
    root = pathlib.Path(tmp_path) / "now"
    (root / "text").mkdir(parents=True, exist_ok=True)
    extra_entries = extra_entries or {}
    rows = ["textID\t#words\tdate\tcountry\twebsite\turl\ttitle", "-" * 20]
    for a in articles:
        website = a.url.split("/")[2]
        n_words = len(a.text.split())
        fields = [a.text_id, str(n_words), "24-01-05", a.sources_country, website, a.url]
        if a.title:  # a row without a title has only six fields
            fields.append(a.title)
        rows.append("\t".join(fields))
    rows.extend(extra_sources_lines)
    (root / "now-sources-2024.txt").write_bytes(("\r\n".join(rows) + "\r\n").encode("latin-1"))
    names = sorted({a.text_file for a in articles} | set(extra_entries))
    with zipfile.ZipFile(root / "text" / "24-01-text.zip", "w", zipfile.ZIP_DEFLATED) as zf:
        for name in names:
            if name in ZIPPED_TEXT_FILES:
                zf.writestr(f"24-01/{name}", _text_file_bytes(name, articles, extra_entries.get(name, ())))
    for name in names:
        if name not in ZIPPED_TEXT_FILES:
            (root / name).write_bytes(_text_file_bytes(name, articles, extra_entries.get(name, ())))
    return root
