#!/usr/bin/env bash
# The one entry script of every sbatch script in slurm/: run a megatron-meta command on the
# job's nodes, then decide (in Python: megatron_meta/cluster/requeue.py) between done, requeue
# and failure.
#
#   launch.sh [options] -- SUBCOMMAND ARGS...      (SUBCOMMAND ARGS: `megatron-meta` arguments)
#
# Options (each also an environment variable, so a site sets them once):
#   --torchrun              one torchrun per node (srun --kill-on-bad-exit=1, one task a node)
#   --gpus-per-node N       MM_GPUS_PER_NODE  processes per node (default: SLURM_GPUS_ON_NODE or 1)
#   --run-dir DIR           MM_RUN_DIR        the run's folder (its --save): logs/{job}_{attempt}/
#                                             and run_state.json (requeue decision) live there
#   --max-restarts N        MM_MAX_RESTARTS   requeues after preemption/time limit (default 10)
#   --max-failures N        MM_MAX_FAILURES   retries of a crashed run from its last checkpoint
#                                             (default 0: a crash fails the job)
#   --env PATH              MM_PYTHON_ENV     a virtualenv folder (or a script) to activate
#   --container-image IMG   MM_CONTAINER_IMAGE   run in a container (pyxis)
#   --container-mounts M    MM_CONTAINER_MOUNTS  its mounts (pyxis --container-mounts)
#   --tasks-file FILE       array jobs: line SLURM_ARRAY_TASK_ID of FILE holds the arguments
#                           (shell words) that replace SUBCOMMAND ARGS
#   --sub NAME              put the subcommand NAME before the arguments (sbatch scripts use it)
#   --array MODE            array jobs: add task SLURM_ARRAY_TASK_ID's arguments for MODE local,
#                           leave-out or variant (megatron_meta/cluster/array_task.py) over
#   --values A,B,...        MM_VALUES     regions or variants, one per task, saved under
#   --save-root DIR         MM_SAVE_ROOT  DIR/{mode}-{value}
# MM_CODE: a copy of the package to import instead of the installed one (`study submit` sets it
# to its snapshot, with MM_HOME). Training commands check the job's --time first
# (megatron_meta/cluster/time_limit.py) and fail at once, never requeued, when it is too short.
set -uo pipefail
# Slurm's time-limit SIGTERM (and --signal warnings) reach this shell too: outlive them, so the
# requeue decision below still runs once the trainer has saved and stopped.
trap 'echo "launch.sh: received SIGTERM"' TERM
trap 'echo "launch.sh: received SIGUSR1"' USR1

LAUNCHER=python
GPUS=${MM_GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-1}}
RUN_DIR=${MM_RUN_DIR:-}
MAX_RESTARTS=${MM_MAX_RESTARTS:-10}
MAX_FAILURES=${MM_MAX_FAILURES:-0}
PY_ENV=${MM_PYTHON_ENV:-}
IMAGE=${MM_CONTAINER_IMAGE:-}
MOUNTS=${MM_CONTAINER_MOUNTS:-}
TASKS_FILE=
SUB=
ARRAY_MODE=
VALUES=${MM_VALUES:-}
SAVE_ROOT=${MM_SAVE_ROOT:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --torchrun) LAUNCHER=torchrun; shift ;;
    --gpus-per-node) GPUS=$2; shift 2 ;;
    --run-dir) RUN_DIR=$2; shift 2 ;;
    --max-restarts) MAX_RESTARTS=$2; shift 2 ;;
    --max-failures) MAX_FAILURES=$2; shift 2 ;;
    --env) PY_ENV=$2; shift 2 ;;
    --container-image) IMAGE=$2; shift 2 ;;
    --container-mounts) MOUNTS=$2; shift 2 ;;
    --tasks-file) TASKS_FILE=$2; shift 2 ;;
    --sub) SUB=$2; shift 2 ;;
    --array) ARRAY_MODE=$2; shift 2 ;;
    --values) VALUES=$2; shift 2 ;;
    --save-root) SAVE_ROOT=$2; shift 2 ;;
    --) shift; break ;;
    *) echo "launch.sh: unknown option $1 (options end with --)" >&2; exit 2 ;;
  esac
done
if [ -n "$TASKS_FILE" ]; then
  line=$(sed -n "$(( ${SLURM_ARRAY_TASK_ID:?--tasks-file needs an array job} + 1 ))p" "$TASKS_FILE")
  [ -n "$line" ] || { echo "launch.sh: no line $SLURM_ARRAY_TASK_ID in $TASKS_FILE" >&2; exit 2; }
  eval "set -- $line"
fi
if [ -n "$PY_ENV" ]; then
  if [ -f "$PY_ENV/bin/activate" ]; then source "$PY_ENV/bin/activate"; else source "$PY_ENV"; fi
fi
PYTHON=${MM_PYTHON:-python3}
# MM_CODE: a snapshot of the package to run instead of the installed one (`study submit`).
[ -n "${MM_CODE:-}" ] && export PYTHONPATH="$MM_CODE${PYTHONPATH:+:$PYTHONPATH}"
if [ -n "$ARRAY_MODE" ]; then
  mapfile -d '' EXTRA < <("$PYTHON" -m megatron_meta.cluster.array_task "$ARRAY_MODE" \
      --values "${VALUES:?--array needs --values}" --save-root "${SAVE_ROOT:?--array needs --save-root}" \
      --task-id "${SLURM_ARRAY_TASK_ID:?--array needs an array job (sbatch --array=0-N)}") || exit 2
  set -- "$@" "${EXTRA[@]}"
fi
[ -n "$SUB" ] && set -- "$SUB" "$@"
[ $# -gt 0 ] || { echo "launch.sh: no megatron-meta command after --" >&2; exit 2; }
if [ -z "$RUN_DIR" ]; then  # a training command's --save is its run folder
  prev=; for a in "$@"; do [ "$prev" = --save ] && RUN_DIR=$a; prev=$a; done
fi

JOB=${SLURM_JOB_ID:?launch.sh runs inside a Slurm job (sbatch)}
ATTEMPT=${SLURM_RESTART_COUNT:-0}
# An array task is named as squeue and scontrol name it (ARRAYJOB_TASK), not by its own job id.
[ -n "${SLURM_ARRAY_JOB_ID:-}" ] && JOB=${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}
# MM_LOG_ROOT: where commands without a run folder log (the study sets its output folder).
LOG_DIR=${RUN_DIR:-${MM_LOG_ROOT:-${SLURM_SUBMIT_DIR:-.}}}/logs/${JOB}_${ATTEMPT}
[ "$LAUNCHER" = torchrun ] && mkdir -p "$LOG_DIR"
# The rendezvous host: the first node's address as Slurm knows it (names need not resolve).
FIRST=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$FIRST" -o | tr ' ' '\n' | sed -n 's/^NodeAddr=//p')
export MASTER_ADDR=${MASTER_ADDR:-$FIRST}
# SLURM_JOB_ID differs for every array task; 15000-29999 stays below the ephemeral range.
export MASTER_PORT=${MASTER_PORT:-$(( 15000 + SLURM_JOB_ID % 15000 ))}
echo "launch.sh: job $JOB attempt $ATTEMPT on $SLURM_JOB_NODELIST (rendezvous $MASTER_ADDR:$MASTER_PORT)${RUN_DIR:+, logs in $LOG_DIR}"

SRUN=(srun --export=ALL --kill-on-bad-exit=1 --open-mode=append)
[ -n "$IMAGE" ] && SRUN+=(--container-image="$IMAGE")
[ -n "$MOUNTS" ] && SRUN+=(--container-mounts="$MOUNTS")
if [ "$LAUNCHER" = torchrun ]; then
  # A time limit too short to train in fails now, said once, rather than requeueing uselessly.
  "$PYTHON" -m megatron_meta.cluster.time_limit --check-job || exit 2
  SRUN+=(--nodes="$SLURM_NNODES" --ntasks-per-node=1 --output="$LOG_DIR/node%t.log")
  # Lines of every node's ranks named by global rank ([rank3]:), not [default0] on each node.
  export TORCHELASTIC_LOG_LINE_PREFIX_TEMPLATE='[rank${rank}]:'  # expanded by torchrun
  # SLURM_NODEID is each task's own: expanded on the node, by the inner shell.
  "${SRUN[@]}" bash -c 'exec "$0" -m megatron_meta.launch --nnodes "$SLURM_NNODES" \
      --node-rank "$SLURM_NODEID" --nproc-per-node "$1" --master-addr "$MASTER_ADDR" \
      --master-port "$MASTER_PORT" --signals-to-handle SIGTERM,SIGINT,SIGUSR1 \
      --shutdown-timeout 300 --log-dir "$2/ranks-node$SLURM_NODEID" --redirects 3 --tee 3 \
      -m megatron_meta.cli "${@:3}"' "$PYTHON" "$GPUS" "$LOG_DIR" "$@"
else
  # One process: its output (errors included) goes to the job's own log, named as the job is.
  SRUN+=(--nodes=1 --ntasks=1)
  "${SRUN[@]}" "$PYTHON" -m megatron_meta.cli "$@"
fi
CODE=$?
echo "launch.sh: attempt $ATTEMPT exited with code $CODE"
TRAINING=; [ "$LAUNCHER" = torchrun ] && TRAINING=--training  # (no empty array: bash 4.2, set -u)
exec "$PYTHON" -m megatron_meta.cluster.requeue --exit-code "$CODE" --max-restarts "$MAX_RESTARTS" \
  --max-failures "$MAX_FAILURES" --log-dir "$LOG_DIR" ${RUN_DIR:+--run-dir "$RUN_DIR"} $TRAINING
