"""The MCQ benchmark as an lm-evaluation-harness task (:mod:`.task`), run in process
(:mod:`.run`) and compared with our scorer (:mod:`.benchmark`)."""
