"""``examples/study_paper.yaml`` under ``protocol: paper``: every stage gets the protocol, the
grid follows the paper, and ``study plan`` names the nodes behind each of the paper's tables."""

from study_support import paper_study_with_inputs

from megatron_meta.study.graph import build_graph
from megatron_meta.study.spec import load_study


def test_paper_study_plan(capsys, tmp_path):
    from megatron_meta.cli import main

    path = paper_study_with_inputs(tmp_path)
    study = load_study(path)
    assert study.protocol == "paper"
    nodes = {n.name: n for n in build_graph(study)}
    assert len(study.runs) == 31
    assert "--protocol" in nodes["preprocess"].args and "--prepend-bos" in nodes["preprocess"].args
    train = nodes["train/global-full-paper-1b"].args
    assert train[train.index("--region-mix") + 1] == "interleave" and "--weight-decay-all" in train
    for kind in ("perplexity", "finetune", "mcq"):
        args = nodes[f"{kind}/global-full-paper-1b"].args
        assert args[args.index("--protocol") + 1] == "paper", kind
    meta, plain = nodes["mcq/global-full-paper-1b"].args, nodes["mcq/global-none-paper-1b"].args
    assert meta[meta.index("--metadata") + 1] == "with" and plain[plain.index("--metadata") + 1] == "without"
    assert "--metadata-wrap" in nodes["finetune/global-full-paper-1b"].args
    assert "--metadata-wrap" not in nodes["finetune/global-none-paper-1b"].args
    base = nodes["mcq-baseline"].args
    assert base[base.index("--model") + 1] == str(tmp_path / "models" / "Llama-3.2-1B-Instruct")
    assert "mcq-baseline" in nodes["report"].deps
    assert main(["study", "plan", path, "--output-dir", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "protocol paper" in out.splitlines()[0]
    assert "Cross-region matrix with deltas" in out and "mcq/global-full-paper-1b, mcq/global-none-paper-1b, mcq-baseline" in out
