"""``--protocol ours|paper``: one switch, read by every stage, for the authors' exact behaviour.

``paper`` reproduces what the authors' code did where it differs from our defaults (FACTS 1a;
the README's table "Our defaults and the paper protocol" lists every difference and why ours is
the default). Each stage reads the flag itself; a study file's ``protocol: paper`` passes it to
every stage. It lives below all stages, beside :mod:`megatron_meta.manifest`, because corpora,
training, evaluation and fine-tuning all read it.
"""

from __future__ import annotations

import argparse

OURS = "ours"
PAPER = "paper"
PROTOCOLS = (OURS, PAPER)


def add_protocol_argument(parser: argparse.ArgumentParser, effect: str) -> None:
    """``--protocol`` on ``parser``; ``effect`` says what ``paper`` changes in this command."""
    parser.add_argument(
        "--protocol", choices=PROTOCOLS, default=OURS,
        help=f"'paper': the authors' code's behaviour ({effect}); default 'ours' (README table)",
    )
