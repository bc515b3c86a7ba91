"""`convert to-hf` writes a model card (megatron_meta/convert/model_card.py): training data and
variant, the metadata format to prompt with, the recipe, and the study's figures for the run."""

import json
import os
import subprocess
import sys

from training_support import REPO, run_cli, tiny_args, write_corpus


def test_to_hf_writes_a_model_card_with_data_prompt_recipe_and_study_figures(tmp_path):
    from megatron_meta.evaluation.mcq.score import RESULTS_FORMAT

    manifest = write_corpus(str(tmp_path / "corpus"), docs_per_region=8)
    study = tmp_path / "study"
    save = study / "runs" / "loo-Asia"
    args = tiny_args(manifest, **{"--train-iters": 3, "--save": save, "--exclude-regions": "Asia"})
    out = run_cli(args)
    assert out.returncode == 0, out.stderr[-3000:]
    # the study's results for this run, as evaluate perplexity / evaluate mcq write them
    (study / "eval" / "perplexity").mkdir(parents=True)
    (study / "eval" / "perplexity" / "loo-Asia.json").write_text(json.dumps([
        {"model": "loo-Asia", "variant": "full", "region": "Europe", "documents": 10, "tokens": 900,
         "nll": 4.0, "ppl": 54.6, "ci_low": 50.1, "ci_high": 59.9, "ratio_to_none": 0.91,
         "ratio_ci_low": 0.88, "ratio_ci_high": 0.94}]))
    (study / "eval" / "mcq").mkdir(parents=True)
    (study / "eval" / "mcq" / "loo-Asia.json").write_text(json.dumps({
        "format": RESULTS_FORMAT, "config": {"benchmark": "/x/mcq_news.jsonl"},
        "records": [{"setting": "with", "correct": c} for c in (True, False, True, True)]}))
    hf = tmp_path / "hf"
    conv = subprocess.run([sys.executable, "-m", "megatron_meta.cli", "convert", "to-hf", "--load",
                           str(save), "--output", str(hf)], cwd=REPO, capture_output=True, text=True,
                          timeout=300)
    assert conv.returncode == 0, conv.stderr[-3000:]
    card = (hf / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: transformers")
    assert f"- manifest: `{manifest}`" in card
    assert "- metadata variant: `full` (fields: URL, COUNTRY, CONTINENT)" in card
    assert "- regions left out: Asia" in card and "- shard Europe: 8 documents" in card
    assert "- shard Asia" not in card
    assert "URL: https://www.bbc.co.uk/news/uk-38539472\nCOUNTRY: gb\nCONTINENT: Europe\n\nTITLE: {title}" in card
    assert "- trained 3 iterations at sequence length 32" in card and "global batch 8" in card
    assert "| Europe | full | 54.60 [50.10, 59.90] | 0.910 [0.880, 0.940] |" in card
    assert "### MCQ accuracy (mcq_news.jsonl)" in card and "- with metadata: 75.0% of 4" in card
    assert os.path.isfile(hf / "config.json")
