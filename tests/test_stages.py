"""How a study's commands run on this machine (megatron_meta.stages): console filtering and
failing commands. The demo study end to end is tested in test_study.py."""

import sys

import pytest

from megatron_meta.stages import OutputFilter, run_command
from megatron_meta.errors import MegatronMetaError




def test_console_filter_hides_library_noise_but_keeps_progress_and_errors():
    keep = OutputFilter()
    shown = [line for line in [
        "21:44:32 INFO megatron.core.datasets.gpt_dataset: Load the document index\n",
        "/x/y.py:24: UserWarning: Apex is not installed.\n",
        "  warnings.warn(\n",
        "Params for bucket 1 (10 elements):\n",
        "\tdecoder.layers.0.mlp.linear_fc1.weight\n",
        "21:41:37 WARNING megatron_meta.corpora.bad_records: skipping record: f.csv:23: empty\n",
        "21:45:53 INFO megatron_meta.training.metrics: iteration 100/400 | tokens/s 8,940\n",
        "Traceback (most recent call last):\n",
        "  File \"x.py\", line 3, in <module>\n",
        "megatron-meta train: error: --data-manifest is required\n",
    ] if keep.show(line)]
    assert shown == [
        "21:45:53 INFO megatron_meta.training.metrics: iteration 100/400 | tokens/s 8,940\n",
        "Traceback (most recent call last):\n",
        "  File \"x.py\", line 3, in <module>\n",
        "megatron-meta train: error: --data-manifest is required\n",
    ]
    assert OutputFilter(verbose=True).show("/x/y.py:24: UserWarning: w\n")


def test_a_failing_command_names_its_log_and_shows_its_last_lines(tmp_path, capsys):
    log = str(tmp_path / "logs" / "boom.log")
    cmd = [sys.executable, "-c", "import sys; print('working'); sys.exit('boom: bad flag')"]
    with pytest.raises(MegatronMetaError, match="exit code 1.*boom.log"):
        run_command(cmd, log_path=log)
    assert "boom: bad flag" in capsys.readouterr().out
    assert "boom: bad flag" in open(log).read()
