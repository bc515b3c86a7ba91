"""What a run tells its launcher, and what Slurm tells a run: contracts below every stage.

:mod:`.run_state` is the file a run leaves in its output folder (running, stopped, finished);
:mod:`.slurm_job` reads the job's time limit and restart count; :mod:`.requeue` is what the
Slurm entry script runs after each attempt to decide between done, requeue and failure.
"""
