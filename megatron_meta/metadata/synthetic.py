"""Made-up metadata for prompts that have no document behind them (instructions, quiz questions).

The paper (arXiv 2601.15236) wraps each instruction-tuning prompt, and each benchmark question in
its metadata setting, in the training format with a made-up site URL, a country and its continent
and the title ``Facts about the country {cc}``; without metadata the prompt is preceded by
``CONTENT:`` alone. The authors' evaluation code writes ``CONTENT:`` followed by a newline (not the
space of pretraining documents); we keep their exact text.
"""

from __future__ import annotations

import random
from typing import Optional, Tuple

from megatron_meta.metadata.regions import ISO_CONTINENTS, NOW_CONTINENTS

# The authors' ten made-up quiz/fact sites (their 17_sft_eval / 19_sft_analyse, FACTS 1a), in
# their order. None is a news outlet of the corpus, so the URL says "a site about facts", never
# which region the text comes from.
MADE_UP_BASE_URLS: Tuple[str, ...] = (
    "www.factquizmaster.com",
    "www.globalfactcheck.org",
    "www.worldknowledgehub.com",
    "www.civicspedia.org",
    "www.internationalfacts.net",
    "www.currentaffairsdesk.com",
    "www.newsinsightarchive.com",
    "www.globalquizvault.com",
    "www.factualdigest.org",
    "www.publicknowledgebase.net",
)

STUDY_COUNTRIES: Tuple[str, ...] = tuple(sorted(NOW_CONTINENTS))
"""The 18 country codes of the paper's study, sorted (the seeded draws depend on this order)."""


def facts_prefix(base_url: str, cc: str, continent: str) -> str:
    """Metadata block of a made-up 'facts' page, ending where the prompt text starts."""
    return (
        f"URL: {base_url}/{cc}\nCOUNTRY: {cc}\nCONTINENT: {continent}\n\n"
        f"TITLE: Facts about the country {cc}\n\nCONTENT:\n"
    )


NO_METADATA_PREFIX = "CONTENT:\n"
"""What precedes a prompt in the 'without metadata' setting."""


def random_facts_prefix(rng: random.Random, cc: Optional[str] = None) -> str:
    """:func:`facts_prefix` with a random made-up URL and (unless given) a random study country."""
    base_url = rng.choice(MADE_UP_BASE_URLS)
    cc = cc or rng.choice(STUDY_COUNTRIES)
    return facts_prefix(base_url, cc, ISO_CONTINENTS.get(cc, "Unknown"))
