"""Writing a chart: one place for the temporary-name-then-rename habit of every report."""

from __future__ import annotations

import os


def save_png(fig, path: str) -> None:
    """Save a matplotlib figure as PNG under a temporary name, then rename it into place."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, format="png")
    os.replace(tmp, path)
