"""The paper study (examples/study_paper.yaml) copied beside stand-ins for the inputs it names,
so that its preflight passes where the user's data (NOW, the Llama-3.2 tokenizer and instruct
model, Alpaca, the paper's benchmark) is not at hand."""

import json
import os
import shutil

from corpus_fixtures import make_now_folder
from training_support import REPO


def paper_study_with_inputs(tmp_path) -> str:
    """examples/study_paper.yaml in a folder beside the inputs it names (paths relative to it)."""
    examples = tmp_path / "examples"
    examples.mkdir()
    for name in ("study_paper.yaml", "paper_1b.yaml"):
        shutil.copy(os.path.join(REPO, "examples", name), examples / name)
    make_now_folder(str(tmp_path / "data" / "now"))
    (tmp_path / "data" / "Llama-3.2-1B").mkdir()  # stands in for a local copy of its tokenizer
    (tmp_path / "models" / "Llama-3.2-1B-Instruct").mkdir(parents=True)  # and of the baseline
    (tmp_path / "data" / "alpaca_cleaned.json").write_text('[{"instruction": "i", "output": "o"}]')
    (tmp_path / "data" / "qa_metacul.jsonl").write_text(json.dumps(
        {"question": "Capital of Kenya?", "options": ["Nairobi", "Lagos", "Accra", "Cairo"],
         "correct_answer": "Nairobi", "country": "Kenya", "continent": "africa"}) + "\n")
    return str(examples / "study_paper.yaml")
