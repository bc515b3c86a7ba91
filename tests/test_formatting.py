"""The exact training text of every metadata variant (FACTS section 1)."""

import pytest

from megatron_meta.corpora.records import Document
from megatron_meta.errors import ConfigError
from megatron_meta.metadata.formatting import (
    VARIANTS,
    document_body,
    format_document,
    metadata_prefix,
    parse_variants,
    url_domain,
)

DOC = Document(
    id="7",
    url="https://www.vanguardngr.com/2024/01/lagos-traffic?page=2",
    country="ng",
    continent="Africa",
    title="Lagos traffic eases",
    text="Commuters reported shorter trips.\n\nA second paragraph.",
)
URL = DOC.url
BODY = "TITLE: Lagos traffic eases\n\nCONTENT: Commuters reported shorter trips.\n\nA second paragraph."

EXPECTED = {
    "full": f"URL: {URL}\nCOUNTRY: ng\nCONTINENT: Africa\n\n{BODY}",
    "url_only": f"URL: {URL}\n\n{BODY}",
    "url_country": f"URL: {URL}\nCOUNTRY: ng\n\n{BODY}",
    "url_continent": f"URL: {URL}\nCONTINENT: Africa\n\n{BODY}",
    "country_only": f"COUNTRY: ng\n\n{BODY}",
    "continent_only": f"CONTINENT: Africa\n\n{BODY}",
    "none": BODY,
}


def test_expected_covers_every_variant():
    assert set(EXPECTED) == set(VARIANTS)


@pytest.mark.parametrize("variant", sorted(EXPECTED))
def test_variant_exact_text(variant):
    assert format_document(DOC, variant) == EXPECTED[variant]
    # prefix + body is the whole text, the prefix ends with the blank line (or is empty)
    prefix = metadata_prefix(DOC, variant)
    assert prefix + document_body(DOC) == EXPECTED[variant]
    assert prefix == "" if variant == "none" else prefix.endswith("\n\n")


def test_papers_example_format():
    doc = Document("1", "http://example.com/a", "us", "America", "T", "C")
    assert format_document(doc, "full") == (
        "URL: http://example.com/a\nCOUNTRY: us\nCONTINENT: America\n\nTITLE: T\n\nCONTENT: C"
    )


@pytest.mark.parametrize("variant", ["full", "url_only", "url_country", "url_continent"])
def test_url_form_domain(variant):
    text = format_document(DOC, variant, url_form="domain")
    assert text == EXPECTED[variant].replace(URL, "vanguardngr.com")


@pytest.mark.parametrize("variant", ["country_only", "continent_only", "none"])
def test_url_form_domain_leaves_urlless_variants_alone(variant):
    assert format_document(DOC, variant, url_form="domain") == EXPECTED[variant]


@pytest.mark.parametrize(
    "url, domain",
    [
        ("https://www.bbc.co.uk/news/uk-1", "bbc.co.uk"),
        ("http://abcnews.go.com/Politics/x?id=1", "abcnews.go.com"),
        ("europe.chinadaily.com.cn/world/2017", "europe.chinadaily.com.cn"),
        ("https://WWW.Example.com:8080/path", "example.com"),
    ],
)
def test_url_domain(url, domain):
    assert url_domain(url) == domain


def test_untitled_document_body_is_content_alone():
    doc = Document("2", "http://x.org/a", "ke", "Africa", "", "Body only.")
    assert format_document(doc, "none") == "CONTENT: Body only."
    assert format_document(doc, "full") == (
        "URL: http://x.org/a\nCOUNTRY: ke\nCONTINENT: Africa\n\nCONTENT: Body only."
    )


def test_parse_variants():
    assert parse_variants("full") == ["full"]
    assert parse_variants(" none, full,none ,") == ["none", "full"]
    assert parse_variants(",".join(VARIANTS)) == list(VARIANTS)
    with pytest.raises(ConfigError, match="unknown variant 'fulll'"):
        parse_variants("full,fulll")
    with pytest.raises(ConfigError, match="empty"):
        parse_variants(" , ")
