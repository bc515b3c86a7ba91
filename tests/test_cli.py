"""The console script dispatches subcommands and turns user errors into one line, exit code 2."""

import subprocess
import sys

from megatron_meta import cli
from megatron_meta.errors import ConfigError


def test_help_lists_every_subcommand(capsys):
    assert cli.main(["--help"]) == 0
    out = capsys.readouterr().out
    for name in cli.SUBCOMMANDS:
        assert name in out


def test_unknown_subcommand(capsys):
    assert cli.main(["pretrian"]) == 2
    assert "unknown subcommand 'pretrian'" in capsys.readouterr().err


def test_user_error_is_one_line(capsys):
    def boom(argv):
        raise ConfigError("--tensor-model-parallel-size 3 does not divide num_attention_heads=16")

    assert cli.run_guarded(boom, [], "megatron-meta train") == 2
    err = capsys.readouterr().err
    assert err.strip() == (
        "megatron-meta train: error: --tensor-model-parallel-size 3 does not divide "
        "num_attention_heads=16"
    )


def test_every_subcommand_module_has_main():
    import importlib

    for module, _ in cli.SUBCOMMANDS.values():
        assert callable(importlib.import_module(module).main), module


def test_console_entry_point_runs():
    out = subprocess.run(
        [sys.executable, "-m", "megatron_meta.cli", "--version"], capture_output=True, text=True
    )
    assert out.returncode == 0 and out.stdout.startswith("megatron-meta ")
