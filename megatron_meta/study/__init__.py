"""The study: one YAML file -> a graph of stages (preprocess, train, convert, LoRA, evaluation,
report) -> run by an executor (local, Slurm), with a ledger of what ran where.

:mod:`.runs` holds the types (a run, the study), :mod:`.spec` reads the file, :mod:`.kinds`
turns each node into its ``megatron-meta`` command, :mod:`.graph` expands the study into nodes,
:mod:`.preflight` checks them all before anything runs, :mod:`.ledger` remembers jobs,
:mod:`.local` (with :mod:`.console`) and :mod:`.slurm` execute, :mod:`.report` summarises,
:mod:`.cli` is ``megatron-meta study``.
"""
