"""LoRA instruction tuning: data, metadata wrapping, training, resume, merge (tiny real Llama)."""

import json
import os
import random
import re

import pytest
import torch

from hf_fixtures import make_tiny_llama
from megatron_meta.corpora.records import Document
from megatron_meta.errors import DataError
from megatron_meta.finetune.config import LoraRecipe, load_recipe
from megatron_meta.finetune.data import IGNORE, encode_all, read_alpaca, render, split
from megatron_meta.finetune.instructions import records_from_documents
from megatron_meta.metadata.synthetic import MADE_UP_BASE_URLS, STUDY_COUNTRIES

OUTLETS = [("https://www.rte.ie/news/{}", "ie", "Europe"), ("https://www.cnn.com/{}", "us", "America"),
           ("https://www.bbc.co.uk/news/{}", "gb", "Europe"), ("https://www.dw.com/en/{}", "de", "Europe")]


def _docs(n=12):
    docs = []
    for i in range(n):
        url, cc, continent = OUTLETS[i % len(OUTLETS)]
        docs.append(Document(id=str(i), url=url.format(i), country=cc, continent=continent,
                             title=f"Council votes on budget plan number {i}",
                             text=f"The council met on Monday to discuss plan {i}. " * 3))
    return docs


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("sft") / "news.jsonl"
    with open(path, "w") as f:
        for r in records_from_documents(_docs()):
            f.write(json.dumps(r) + "\n")
    return str(path)


@pytest.fixture(scope="module")
def tokenizer(smollm2_hf):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(smollm2_hf)


def test_news_instructions_come_from_the_articles():
    records = records_from_documents(_docs(2))
    assert len(records) == 4
    assert records[0]["output"] == "Council votes on budget plan number 0"
    assert records[1] == {"instruction": "In which country is the news outlet that published this "
                          "headline based?", "input": "Council votes on budget plan number 0",
                          "output": "Ireland"}


def test_bad_alpaca_records_are_named_and_counted(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"instruction": "a", "output": "b"}\n{"input": "x", "output": "y"}\n'
                    '{"instruction": "c", "output": "d"}\nnot json\n')
    with pytest.raises(DataError) as e:
        read_alpaca(str(path))
    assert "2 bad instruction record(s)" in str(e.value)
    assert f"{path}:2: no 'instruction'" in str(e.value) and f"{path}:4: invalid JSON" in str(e.value)
    listed = tmp_path / "list.json"
    listed.write_text(json.dumps([{"instruction": "a", "output": "b"}, {"instruction": "", "output": "c"}]))
    with pytest.raises(DataError, match=re.escape(f"{listed}[1]: no 'instruction'")):
        read_alpaca(str(listed))


def test_split_is_seeded_80_20(data_file):
    examples = read_alpaca(data_file)
    train, valid = split(examples, 0.2, 42)
    assert (len(train), len(valid)) == (19, 5)
    assert split(examples, 0.2, 42) == (train, valid)
    assert {e.where for e in train} | {e.where for e in valid} == {e.where for e in examples}


def test_metadata_wrap_is_the_training_format_and_only_the_response_is_scored(data_file, tokenizer):
    examples = read_alpaca(data_file)[:6]
    items = encode_all(tokenizer, examples, 512, metadata_wrap=True, seed=7)
    assert items == encode_all(tokenizer, examples, 512, metadata_wrap=True, seed=7)
    pattern = re.compile(r"URL: (\S+)/([a-z]{2})\nCOUNTRY: ([a-z]{2})\nCONTINENT: (\w+)\n\n"
                         r"TITLE: Facts about the country ([a-z]{2})\n\nCONTENT:\n")
    from megatron_meta.metadata.regions import NOW_CONTINENTS

    for ex, item in zip(examples, items):
        text = tokenizer.decode(item["input_ids"])
        m = pattern.search(text)
        assert m, text
        assert m.group(1) in MADE_UP_BASE_URLS and m.group(2) == m.group(3) == m.group(5)
        assert m.group(2) in STUDY_COUNTRIES and m.group(4) == NOW_CONTINENTS[m.group(2)]
        assert text.index(m.group(0)) < text.index(ex.instruction)  # wraps the prompt
        scored = [t for t in item["labels"] if t != IGNORE]
        assert tokenizer.decode(scored) == ex.output + "<|im_end|>\n"
    plain = encode_all(tokenizer, examples, 512, metadata_wrap=False, seed=7)
    assert "URL:" not in tokenizer.decode(plain[0]["input_ids"])
    prompt, full = render(tokenizer, examples[0])
    assert prompt.startswith("<|im_start|>") and full.startswith(prompt)


def test_paper_recipe_file_is_the_default():
    here = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    assert load_recipe(os.path.join(here, "examples", "lora_paper.yaml")) == LoraRecipe()


def _losses(output):
    with open(os.path.join(output, "log_history.json")) as f:
        history = json.load(f)
    train = {h["step"]: h["loss"] for h in history if "loss" in h}
    evals = [h["eval_loss"] for h in history if "eval_loss" in h]
    return train, evals


@pytest.mark.slow
def test_lora_trains_resumes_and_merges(tmp_path, smollm2_hf, data_file):
    from transformers import TrainerCallback

    from megatron_meta.finetune.merge import merge_adapter
    from megatron_meta.finetune.train import StopRequest, run_finetune

    base = make_tiny_llama(tmp_path / "tiny", smollm2_hf)
    recipe = LoraRecipe(lora_r=8, lora_alpha=16, epochs=3, micro_batch_size=2,
                        gradient_accumulation_steps=2, lr=2e-2, seq_length=128, save_steps=100)
    full = str(tmp_path / "full")
    assert run_finetune(base, data_file, full, recipe) == os.path.join(full, "adapter")
    train, evals = _losses(full)
    steps = sorted(train)
    assert len(steps) == 15 and len(evals) == 3  # 19 examples / (2 x 2) -> 5 steps an epoch
    assert evals[-1] < evals[0] - 0.5, evals
    assert sum(train[s] for s in steps[-3:]) < sum(train[s] for s in steps[:3]) - 1.5

    # Stop after step 7 (as SIGTERM would), then the same call resumes and ends on the same curve.
    stop = StopRequest()

    class StopAt7(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == 7:
                stop.request()

    stopped = str(tmp_path / "stopped")
    assert run_finetune(base, data_file, stopped, recipe, callbacks=[StopAt7()], stop=stop) is None
    assert os.path.isdir(os.path.join(stopped, "checkpoints", "checkpoint-7"))
    assert not os.path.exists(os.path.join(stopped, "adapter"))
    assert run_finetune(base, data_file, stopped, recipe) is not None
    resumed, resumed_evals = _losses(stopped)
    assert sorted(resumed) == steps  # the history restored from checkpoint-7, then steps 8-15
    for s in steps:
        assert resumed[s] == pytest.approx(train[s], rel=1e-4, abs=1e-4), s
    assert resumed_evals[-1] == pytest.approx(evals[-1], rel=1e-4)

    # Merged model = base + adapter, as a standalone folder with tied embeddings kept.
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    merged_dir = merge_adapter(full, str(tmp_path / "merged"))
    merged = AutoModelForCausalLM.from_pretrained(merged_dir).eval()
    adapted = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base), os.path.join(full, "adapter")).eval()
    ids = torch.tensor([random.Random(0).sample(range(49152), 24)])
    with torch.no_grad():
        want, got = adapted(ids).logits, merged(ids).logits
        base_logits = AutoModelForCausalLM.from_pretrained(base)(ids).logits
    assert torch.allclose(got, want, atol=1e-4)
    assert not torch.allclose(got, base_logits, atol=1e-3)  # the adapter did change the model
    assert merged.lm_head.weight.data_ptr() == merged.model.embed_tokens.weight.data_ptr()
    assert not os.path.exists(str(tmp_path / "merged") + ".tmp")


def test_finetune_cli_bad_data_is_one_line_and_writes_nothing(tmp_path, capsys, smollm2_hf):
    from megatron_meta.cli import main

    data = tmp_path / "bad.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n{"input": "no instruction", "output": "c"}\n')
    out = tmp_path / "run"
    assert main(["finetune", "--model", smollm2_hf, "--data", str(data), "--output", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and f"{data}:2: no 'instruction'" in err
    assert not out.exists()
    assert main(["finetune", "--model", smollm2_hf, "--data", str(data), "--output", str(out),
                 "--valid-fraction", "1.5"]) == 2
    assert "--valid-fraction 1.5" in capsys.readouterr().err
    assert main(["finetune", "merge", "--adapter", str(tmp_path), "--output", str(out)]) == 2
    assert "no adapter_config.json" in capsys.readouterr().err


@pytest.mark.distributed
@pytest.mark.slow
def test_finetune_under_torchrun_is_data_parallel(tmp_path, smollm2_hf, data_file):
    import subprocess
    import sys

    from training_support import free_port

    base = make_tiny_llama(tmp_path / "tiny", smollm2_hf)
    out = tmp_path / "ddp"
    env = dict(os.environ, OMP_NUM_THREADS="1", CUDA_VISIBLE_DEVICES="")
    run = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2", "--master-port",
         str(free_port()), "-m", "megatron_meta.cli", "finetune", "--model", base, "--data", data_file,
         "--output", str(out), "--lora-r", "8", "--epochs", "2", "--seq-length", "128",
         "--gradient-accumulation-steps", "1", "--lr", "0.02"],
        env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    train, evals = _losses(str(out))
    # 19 examples, 2 per rank x 2 ranks: 5 steps an epoch (one process would take 10).
    assert max(train) == 10 and len(evals) == 2 and evals[-1] < evals[0]
    assert os.path.exists(out / "adapter" / "adapter_model.safetensors")
