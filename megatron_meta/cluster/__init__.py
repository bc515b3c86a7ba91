"""What a run tells its launcher, and what Slurm tells a run: contracts below every stage.

:mod:`.run_state` is the file a run leaves in its output folder (running, stopped, finished,
crashed, cancelled, and every attempt's ending); :mod:`.slurm_job` reads the job, its nodes, time
limit and restart count from Slurm; :mod:`.time_limit` derives the signal lead and exit margin
from ``--time`` and refuses limits too short to train in; :mod:`.crash` finds the rank that died
in the node logs; :mod:`.requeue` is what the Slurm entry script runs after each attempt to
decide between done, requeue and failure.
"""
