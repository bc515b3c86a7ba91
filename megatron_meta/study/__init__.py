"""The study: one YAML file -> a graph of stages (preprocess, train, convert, LoRA, evaluation,
report) -> run by an executor (local, Slurm), with a ledger of what ran where.

:mod:`.spec` reads the file, :mod:`.graph` expands it into nodes, :mod:`.kinds` turns each node
into its ``megatron-meta`` command, :mod:`.ledger` remembers jobs, :mod:`.local` and
:mod:`.slurm` execute, :mod:`.report` summarises, :mod:`.cli` is ``megatron-meta study``.
"""
