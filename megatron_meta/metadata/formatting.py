"""The exact text a model is trained and evaluated on.

Format (arXiv 2601.15236, as in the authors' release): the variant's metadata fields as
``NAME: value`` lines joined by ``\\n``, then ``\\n\\n``, then ``TITLE: {title}\\n\\nCONTENT: {text}``.
A variant without fields is the body alone; a document without a title has ``CONTENT: {text}``
as its body.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Dict, List, Tuple
from urllib.parse import urlsplit

from megatron_meta.errors import ConfigError

if TYPE_CHECKING:  # corpora builds on this stage; only the annotations name its record
    from megatron_meta.corpora.records import Document

# Variant name -> metadata fields, in the order they are written.
VARIANTS: Dict[str, Tuple[str, ...]] = {
    "full": ("URL", "COUNTRY", "CONTINENT"),
    "url_only": ("URL",),
    "url_country": ("URL", "COUNTRY"),
    "url_continent": ("URL", "CONTINENT"),
    "country_only": ("COUNTRY",),
    "continent_only": ("CONTINENT",),
    "none": (),
}

URL_FORMS = ("full", "domain")
BODY_MARKER = "TITLE: "
CONTENT_MARKER = "CONTENT: "


def parse_variants(spec: str) -> List[str]:
    """Parse ``--metadata-variants`` (comma list); keeps order, drops duplicates."""
    names: List[str] = []
    for raw in spec.split(","):
        name = raw.strip()
        if not name:
            continue
        if name not in VARIANTS:
            raise ConfigError(
                f"--metadata-variants: unknown variant {name!r}; choose from {', '.join(VARIANTS)}"
            )
        if name not in names:
            names.append(name)
    if not names:
        raise ConfigError("--metadata-variants is empty; give at least one, e.g. 'full'")
    return names


def url_domain(url: str) -> str:
    """Host of a URL without ``www.`` (MeCo conditions on the domain only)."""
    candidate = url if "://" in url else "//" + url
    host = urlsplit(candidate).hostname or url
    return host[4:] if host.startswith("www.") else host


def metadata_prefix(doc: Document, variant: str, url_form: str = "full") -> str:
    """The metadata block of ``variant`` including its trailing blank line ('' for 'none')."""
    fields = VARIANTS[variant]
    if not fields:
        return ""
    values = {
        "URL": url_domain(doc.url) if url_form == "domain" else doc.url,
        "COUNTRY": doc.country,
        "CONTINENT": doc.continent,
    }
    return "\n".join(f"{name}: {values[name]}" for name in fields) + "\n\n"


def document_body(doc: Document) -> str:
    """``TITLE: ...\\n\\nCONTENT: ...`` (or ``CONTENT: ...`` alone when there is no title)."""
    if doc.title:
        return f"{BODY_MARKER}{doc.title}\n\n{CONTENT_MARKER}{doc.text}"
    return f"{CONTENT_MARKER}{doc.text}"


def format_document(doc: Document, variant: str, url_form: str = "full") -> str:
    """The full training text of ``doc`` under ``variant``."""
    return metadata_prefix(doc, variant, url_form) + document_body(doc)
