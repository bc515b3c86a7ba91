"""Which shards a run trains on and with which weights (no megatron-core import: the CLI checks
these before anything heavy starts)."""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence

import numpy as np

from megatron_meta.errors import ConfigError
from megatron_meta.manifest import Manifest, ShardEntry

ALL_REGIONS = "all"  # name of the single region of a manifest written with --split-by none


def region_name(region: Optional[str]) -> str:
    return region if region is not None else ALL_REGIONS


def parse_region_weights(spec: Optional[str]) -> Optional[Dict[str, float] | str]:
    """``None`` (by size), ``"balanced"``, or a {region: weight} mapping from ``'A=1,B=2'``."""
    if spec is None or not spec.strip():
        return None
    if spec.strip().lower() == "balanced":
        return "balanced"
    weights: Dict[str, float] = {}
    for item in spec.split(","):
        name, sep, value = item.partition("=")
        try:
            weight = float(value)
        except ValueError:
            weight = -1.0
        if not sep or not name.strip() or weight <= 0:
            raise ConfigError(
                f"--region-weights {spec!r}: expected 'balanced' or REGION=WEIGHT pairs with "
                f"positive weights, e.g. 'Africa=2,Asia=1' (bad item {item!r})"
            )
        weights[name.strip()] = weight
    return weights


def select_shards(manifest: Manifest, variant: str, exclude: Sequence[str]) -> List[ShardEntry]:
    """The variant's shards without the excluded regions (names matched case-insensitively)."""
    shards = [s for s in manifest.shards_for(variant) if s.documents > 0]
    if not shards:
        raise ConfigError(
            f"--variant {variant}: {manifest.path} has no shards of this variant (it has "
            f"{', '.join(manifest.variants()) or 'none'}); re-run preprocess with "
            f"--metadata-variants including {variant}, or pick one of those"
        )
    by_lower = {region_name(s.region).lower(): region_name(s.region) for s in shards}
    unknown = [r for r in exclude if r.lower() not in by_lower]
    if unknown:
        raise ConfigError(
            f"--exclude-regions {','.join(unknown)}: not a region of {manifest.path} "
            f"(regions: {', '.join(sorted(by_lower.values()))})"
        )
    excluded = {r.lower() for r in exclude}
    kept = [s for s in shards if region_name(s.region).lower() not in excluded]
    if not kept:
        raise ConfigError(f"--exclude-regions {','.join(exclude)} leaves no region to train on")
    return kept


def blend_weights(shards: Sequence[ShardEntry], spec: Optional[str]) -> List[float]:
    """Normalized weight per shard from ``--region-weights`` (see module docstring)."""
    tokens = np.array([max(s.tokens, 1) for s in shards], dtype=np.float64)
    parsed = parse_region_weights(spec)
    regions = [region_name(s.region) for s in shards]
    if parsed is None:
        weights = tokens
    else:
        if parsed == "balanced":
            per_region = {r: 1.0 for r in regions}
        else:
            lower = {k.lower(): v for k, v in parsed.items()}
            missing = sorted({r for r in regions if r.lower() not in lower})
            extra = sorted(set(lower) - {r.lower() for r in regions})
            if missing or extra:
                raise ConfigError(
                    f"--region-weights {spec!r}: "
                    + (
                        f"no weight for {', '.join(missing)} (give one, or leave it out with "
                        f"--exclude-regions)"
                        if missing
                        else ""
                    )
                    + ("; " if missing and extra else "")
                    + (f"{', '.join(extra)} is not a region being trained on" if extra else "")
                )
            per_region = {r: lower[r.lower()] for r in regions}
        # A region's weight is shared by its shards in proportion to their tokens.
        region_tokens: Dict[str, float] = {}
        for r, t in zip(regions, tokens):
            region_tokens[r] = region_tokens.get(r, 0.0) + t
        weights = np.array([per_region[r] * t / region_tokens[r] for r, t in zip(regions, tokens)])
    return list(weights / weights.sum())
