"""megatron-meta: metadata-conditioned language models on megatron-core."""

import pathlib

from setuptools import find_packages, setup

HERE = pathlib.Path(__file__).parent

HF = [
    "transformers>=5.0,<6",
    "safetensors",
    "accelerate",
    "gguf",
    "peft>=0.21",
]

setup(
    name="megatron-meta",
    version="0.1.0",
    description="Metadata-conditioned LLM pretraining on megatron-core (arXiv 2601.15236)",
    long_description=(HERE / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["megatron_meta", "megatron_meta.*"]),
    install_requires=[
        "megatron-core==0.16.1",
        # A range that 2.13.0 satisfies: install torch==2.13.0 first so pip never fetches a CUDA build.
        "torch>=2.6",
        "numpy",
        "sentencepiece",
        "nltk",
        "tokenizers",
        "psutil",  # megatron-core's checkpoint writer uses it without declaring it
        "tqdm",
        "pyarrow",  # Parquet and datasets (save_to_disk) corpora
        "pyyaml",
        "tensorboard",
        "matplotlib",
    ],
    extras_require={
        # The Transformer Engine range megatron-core 0.16.1 declares (its `dev` extra).
        "gpu": ["transformer-engine[pytorch]>=2.9.0a0,<2.12.0"],
        # Hugging Face interop, LoRA and the harness: versions tried together (FACTS section 4).
        "hf": HF,
        # `evaluate lm-eval-task` run through EleutherAI's harness (its own scikit-learn, scipy,
        # sacrebleu...): not needed by the demo, which scores MCQ itself.
        "harness": HF + ["lm-eval>=0.4.13"],
        "wandb": ["wandb==0.31.0"],  # --wandb-project (Megatron-LM's flags)
        # datasets: tests write save_to_disk folders
        "dev": ["pytest", "tiktoken", "datasets", "wandb==0.31.0", "lm-eval>=0.4.13"] + HF,
    },
    entry_points={"console_scripts": ["megatron-meta=megatron_meta.cli:main"]},
)
