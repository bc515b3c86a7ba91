"""The localized MCQ benchmark: questions and prompts (:mod:`.data`), scoring (:mod:`.score`,
:mod:`.loglik`, :mod:`.answer_parser`), the report (:mod:`.report`), the CLI (:mod:`.cli`)."""
