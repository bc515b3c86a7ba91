"""How a study's commands run on this machine (megatron_meta/study/console.py): everything to the
stage's log, a progress bar on the console, and on failure the log's last meaningful lines and
the command to rerun. The demo study end to end is tested in test_study.py."""

import io
import sys

import pytest

from megatron_meta.errors import MegatronMetaError
from megatron_meta.study.console import OutputFilter, ProgressBar, run_command


def test_console_filter_hides_library_noise_but_keeps_progress_and_errors():
    keep = OutputFilter()
    shown = [line for line in [
        "21:44:32 INFO megatron.core.datasets.gpt_dataset: Load the document index\n",
        "/x/y.py:24: UserWarning: Apex is not installed.\n",
        "  warnings.warn(\n",
        "Params for bucket 1 (10 elements):\n",
        "\tdecoder.layers.0.mlp.linear_fc1.weight\n",
        "21:41:37 WARNING megatron_meta.corpora.bad_records: skipping record: f.csv:23: empty\n",
        " 40%|████      | 4/10 [00:01<00:02,  2.9it/s]\n",
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


def test_the_progress_bar_follows_training_iterations():
    out = io.StringIO()  # not a terminal: one line a quarter
    bar = ProgressBar("train/a", out, width=8)
    for i in range(1, 9):
        bar.update(f"12:00:00 INFO megatron_meta.training.metrics: iteration {i}/8 | loss 5.{i} | lr 1e-3\n")
    bar.update("{'loss': 1.0, 'epoch': 0.5}\n")
    assert out.getvalue().splitlines() == [
        "      [##......] 2/8  loss 5.200", "      [####....] 4/8  loss 5.400",
        "      [######..] 6/8  loss 5.600", "      [########] 8/8  loss 5.800",
    ]


def test_a_quiet_stage_leaves_its_output_to_the_log(tmp_path, capsys):
    log = str(tmp_path / "logs" / "quiet.log")
    cmd = [sys.executable, "-c", "print('step dict {\\'loss\\': 2.0}'); print(' 50%|#  | 1/2')"]
    run_command(cmd, log_path=log)
    assert capsys.readouterr().out == ""
    text = open(log).read()
    assert "step dict" in text and "50%" in text and text.startswith("$ ")


def test_a_failing_command_names_its_log_shows_its_last_lines_once_and_how_to_rerun(tmp_path, capsys):
    log = str(tmp_path / "logs" / "boom.log")
    cmd = [sys.executable, "-c", "import sys; print('working'); sys.exit('boom: bad flag')"]
    with pytest.raises(MegatronMetaError, match="(?s)exit code 1.*boom.log") as e:
        run_command(cmd, log_path=log)
    assert "rerun: " + sys.executable in str(e.value)
    out = capsys.readouterr().out
    assert out.count("boom: bad flag") == 1 and "working" in out
    assert "boom: bad flag" in open(log).read()
