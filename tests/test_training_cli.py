"""User errors of `megatron-meta train`: a clear one-line message, exit code 2, no traceback.

Each case is a real subprocess of the CLI (they run concurrently to keep the test short).
"""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from training_support import REPO, tiny_args, write_corpus


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    return write_corpus(str(tmp_path_factory.mktemp("corpus")), docs_per_region=10)


def test_user_errors_exit_2_with_a_message_and_no_traceback(manifest, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cases = {
        "layout": (
            tiny_args(manifest, **{"--tensor-model-parallel-size": 2}),
            "--tensor-model-parallel-size 2 does not divide the world size 1",
        ),
        "manifest": (tiny_args(str(tmp_path / "missing.manifest.json")), "manifest not found"),
        "variant": (
            tiny_args(manifest, **{"--variant": "url_only"}),
            "--variant url_only: " + manifest,
        ),
        "load": (tiny_args(manifest, **{"--load": str(empty)}), f"--load {empty}: no checkpoint"),
    }
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    procs = {
        name: subprocess.Popen(
            [sys.executable, "-m", "megatron_meta.cli", "train", *args],
            cwd=REPO,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, (args, _) in cases.items()
    }
    for name, proc in procs.items():
        _, err = proc.communicate(timeout=180)
        expected = cases[name][1]
        assert proc.returncode == 2, (name, err[-2000:])
        assert "Traceback" not in err, (name, err[-2000:])
        assert expected in err, (name, err[-2000:])
        assert err.strip().splitlines()[-1].startswith("megatron-meta train: error:"), name
