"""The training loop: build, load, then step, log, evaluate and save until done.

Launch one process per GPU (or per CPU rank) with ``torchrun``; see :mod:`.cli` for examples.

The loss of an iteration is the mean over every loss-bearing token of its global batch (all
micro-batches on all data-parallel ranks), however the batch is split: the gradients of the
summed loss are divided by the global token count after the reduction, which makes DP=2 equal
one process with the same global batch, and TP=2 equal TP=1. A NaN/inf loss or gradient stops
the run or skips the step (:mod:`.nonfinite`) before the optimizer sees it.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

import torch.distributed as dist

from megatron_meta.checkpoints.hygiene import remove_partial_checkpoints
from megatron_meta.cluster import run_state
from megatron_meta.errors import CheckpointError
from megatron_meta.models import build_model
from megatron_meta.models.build import pad_vocab_size
from megatron_meta.models.flops import flops_per_iteration, peak_flops
from megatron_meta.parallel import ParallelInfo, destroy_parallel, initialize_parallel
from megatron_meta.platform import cpu as platform
from megatron_meta.manifest import Manifest
from megatron_meta.training import checkpoint as ckpt
from megatron_meta.training import nonfinite
from megatron_meta.training.config import RunConfig, dump_yaml
from megatron_meta.training.data import TrainBatches, build_phases
from megatron_meta.training.metrics import LossWindow, MetricsWriter, Throughput
from megatron_meta.training.wandb_log import wandb_writer
from megatron_meta.training.optimizer import build_optimizer, learning_rate, set_learning_rate
from megatron_meta.training.preflight import preflight
from megatron_meta.training.starting_point import starting_point
from megatron_meta.training.step import forward_backward, overlap_grad_reduce
from megatron_meta.training.stopping import StopClock, StopRequest
from megatron_meta.training.validation import build_validation, validation_losses

logger = logging.getLogger(__name__)


@dataclass
class TrainSummary:
    """What a call to :func:`train` did."""

    iteration: int
    """Iteration reached (checkpointed if ``--save`` was given)."""
    losses: Dict[int, float] = field(default_factory=dict)
    """Training loss of each iteration run by this call."""
    val_loss: Dict[str, float] = field(default_factory=dict)
    """Last validation loss per region."""
    stopped_by: Optional[str] = None
    """``exit-interval``, ``exit-duration`` or a signal name when the run stopped early."""




class TrainingRun:
    """Everything one training process holds; :func:`train` drives it."""

    def __init__(
        self,
        config: RunConfig,
        info: ParallelInfo,
        manifest: Manifest,
        stop: Optional[StopRequest] = None,
    ):
        from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig

        self.config, self.info, self.manifest = config, info, manifest
        t, m = config.training, config.model
        self.start = starting_point(config)
        self.preset = self.start.preset
        self.vocab_size = manifest.tokenizer.vocab_size
        self.bf16 = platform.cuda_available() if m.bf16 is None else m.bf16
        model = build_model(
            self.preset,
            vocab_size=self.vocab_size,
            seq_length=m.seq_length,
            tp_size=info.tp_size,
            backend=m.transformer_impl,
            bf16=self.bf16,
        )
        ddp_config = DistributedDataParallelConfig(
            grad_reduce_in_fp32=self.bf16,
            use_distributed_optimizer=config.parallel.use_distributed_optimizer,
            overlap_grad_reduce=overlap_grad_reduce(config.parallel.overlap_grad_reduce, info),
        )
        self.model = DistributedDataParallel(model.config, ddp_config, model)
        self.optimizer = build_optimizer(
            self.model,
            config.optimizer,
            bf16=self.bf16,
            use_distributed_optimizer=config.parallel.use_distributed_optimizer,
        )
        self.batches = TrainBatches(
            build_phases(config, manifest), config, info.dp_size, info.dp_rank
        )
        self.validation = build_validation(config, manifest, info.dp_size, info.dp_rank)
        save = config.checkpoint.save
        tb_dir = config.logging.tensorboard_dir or (
            os.path.join(save, "tensorboard") if save else None
        )
        wandb = wandb_writer(config.logging, save, config.to_dict()) if info.rank == 0 else None
        self.metrics = MetricsWriter(save, tb_dir, enabled=info.rank == 0, wandb=wandb)
        peak_override = config.logging.peak_tflops
        self.throughput = Throughput(
            tokens_per_iteration=t.global_batch_size * m.seq_length,
            flops_per_iteration=flops_per_iteration(
                self.preset,
                m.seq_length,
                pad_vocab_size(self.vocab_size, info.tp_size),
                t.global_batch_size,
            ),
            world_size=info.world_size,
            peak_flops=peak_flops(override=peak_override * 1e12 if peak_override else None),
        )
        self.losses = LossWindow()
        self.iteration = 0
        self.skipped_iterations = 0
        self.last_saved: Optional[int] = None
        self.summary = TrainSummary(iteration=0)
        self.stop = stop or StopRequest()
        # Rank 0 alone keeps the clock (one squeue call per job); the stop flag is all-reduced.
        self.clock = (
            StopClock(t.exit_duration_in_mins, t.exit_duration_margin_mins)
            if info.rank == 0
            else None
        )
        self.last_step_s = 0.0

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_common(self) -> Dict[str, Any]:
        return {
            "consumed_samples": self.iteration * self.config.training.global_batch_size,
            "model_identity": ckpt.model_identity(self.preset, self.vocab_size),
            "config": self.config.to_dict(),
            "layout": {
                "world_size": self.info.world_size,
                "tp": self.info.tp_size,
                "dp": self.info.dp_size,
            },
            "tokenizer": dataclasses.asdict(self.manifest.tokenizer),
        }

    def load(self) -> None:
        c = self.config.checkpoint
        if self.start.mode == "weights":  # --finetune / --pretrained-checkpoint: a new run
            identity = ckpt.model_identity(self.preset, self.vocab_size)
            ckpt.load_weights(self.start.path, self.model, identity, self.start.flag)
            # bf16: megatron's optimizer copied the random weights into its fp32 main weights
            # when it was built and copies those back after every step (Megatron-LM does this).
            self.optimizer.reload_model_params()
            return
        if not c.load:
            return
        loaded = ckpt.load_checkpoint(
            c.load,
            self.model,
            self.optimizer,
            ckpt.model_identity(self.preset, self.vocab_size),
            must_exist=os.path.abspath(c.load) != os.path.abspath(c.save or ""),
        )
        if loaded is None:
            return
        saved_gbs = loaded.common["config"]["training"]["global_batch_size"]
        if saved_gbs != self.config.training.global_batch_size:
            raise CheckpointError(
                f"--load {c.load}: saved with --global-batch-size {saved_gbs}; resume with the "
                "same global batch (the data position is counted in global batches)"
            )
        self.iteration = self.last_saved = loaded.iteration
        self.metrics.truncate_after(self.iteration)

    def save(self) -> None:
        save = self.config.checkpoint.save
        if save and self.last_saved != self.iteration:
            began = time.monotonic()
            ckpt.save_checkpoint(
                save, self.iteration, self.model, self.optimizer, self.checkpoint_common()
            )
            self.last_saved = self.iteration
            if self.clock is not None:
                self.clock.measured(self.last_step_s, time.monotonic() - began)
            if not self.done():  # the launcher names the last checkpoint after a crash
                self.write_state(run_state.RUNNING)
            self.throughput.start()  # saving time is not training throughput

    # -- the loop's verbs ------------------------------------------------------------------------

    def done(self) -> bool:
        return (
            self.iteration >= self.config.training.train_iters
            or self.summary.stopped_by is not None
        )

    def step(self) -> float:
        o, t = self.config.optimizer, self.config.training
        lr = learning_rate(self.iteration + 1, o, t.train_iters)
        set_learning_rate(self.optimizer, lr, o.weight_decay)
        began = time.monotonic()
        micro_batches = self.batches.micro_batches(self.iteration)
        self.model.zero_grad_buffer()
        self.optimizer.zero_grad()
        loss = forward_backward(self.model, micro_batches, self.info)
        if nonfinite.nonfinite(loss, self.model, self.info.device):
            if t.on_nonfinite == "stop":
                raise nonfinite.NonFiniteError(
                    nonfinite.message(self.iteration + 1, loss, self.last_saved)
                )
            logger.warning(
                "iteration %d: non-finite loss or gradient (loss %s): step skipped "
                "(--on-nonfinite skip)", self.iteration + 1, loss,
            )
            self.optimizer.zero_grad()
            self.skipped_iterations += 1
            grad_norm = float("nan")
        else:
            _, grad_norm, _ = self.optimizer.step()
            self.losses.add(loss)
        self.iteration += 1
        self.last_step_s = time.monotonic() - began
        self.throughput.iteration_done()
        self.summary.losses[self.iteration] = loss
        self.last_lr, self.last_grad_norm = lr, grad_norm
        return loss

    def evaluate_if_due(self) -> Optional[Dict[str, float]]:
        interval = self.config.training.eval_interval
        due = (interval and self.iteration % interval == 0) or (
            self.iteration == self.config.training.train_iters
        )
        if not due or not self.validation.regions():
            return None
        from megatron.core import parallel_state

        losses = validation_losses(
            self.model,
            self.validation,
            self.config.training.micro_batch_size,
            self.info.device,
            parallel_state.get_data_parallel_group(),
        )
        self.summary.val_loss = losses
        self.throughput.start()  # validation time is not training throughput
        return losses

    def check_stop(self) -> None:
        exit_interval = self.config.training.exit_interval
        time_up = self.clock is not None and self.clock.time_up()
        reason = self.stop.agreed(self.info.device, time_up)
        if reason:
            self.summary.stopped_by = reason
        elif exit_interval and self.iteration % exit_interval == 0 and not self.done():
            self.summary.stopped_by = "exit-interval"

    def log_if_due(self, val_loss: Optional[Dict[str, float]]) -> None:
        due = (
            self.iteration % self.config.logging.log_interval == 0
            or val_loss is not None
            or self.done()
        )
        if not due:
            return
        record = {
            "iteration": self.iteration,
            "loss": self.losses.mean(),
            "lr": self.last_lr,
            "grad_norm": self.last_grad_norm,
            **self.throughput.window(),
            "consumed_samples": self.iteration * self.config.training.global_batch_size,
            "variant": self.batches.phase_of(self.iteration - 1).variant,
        }
        if val_loss is not None:
            record["val_loss"] = val_loss
        if self.skipped_iterations:
            record["skipped_iterations"] = self.skipped_iterations
        self.metrics.write(record, self.config.training.train_iters)

    def save_if_due(self) -> None:
        interval = self.config.checkpoint.save_interval
        if (interval and self.iteration % interval == 0) or self.done():
            self.save()

    def write_state(self, state: str) -> None:
        """Tell the launcher what this run is doing (:mod:`megatron_meta.cluster.run_state`);
        the barrier keeps every rank alive until rank 0 wrote it, so no launcher kills it."""
        save = self.config.checkpoint.save
        if save and self.info.rank == 0:
            reason = self.summary.stopped_by if state == run_state.STOPPED else None
            run_state.write_state(save, run_state.RunState(state, self.iteration, reason))
        dist.barrier()

    def close(self) -> None:
        self.stop.close()
        self.metrics.close()


def train(
    config: RunConfig, manifest: Optional[Manifest] = None, stop: Optional[StopRequest] = None
) -> TrainSummary:
    """Train as configured; returns when done, at ``--exit-interval`` or on SIGTERM/SIGUSR1.

    ``manifest`` is :func:`~.preflight.preflight`'s result when the caller already ran it;
    ``stop`` the caller's :class:`StopRequest` when it installed one before starting up.
    """
    stop = stop or StopRequest()
    manifest = manifest or preflight(config)
    info = initialize_parallel(config.parallel.tensor_model_parallel_size, config.training.seed)
    if info.rank != 0:  # one process reports; the others only warn
        logging.getLogger().setLevel(logging.WARNING)
    run: Optional[TrainingRun] = None
    try:
        if info.rank == 0 and config.checkpoint.save:
            dump_yaml(config, os.path.join(config.checkpoint.save, "config.yaml"))
        run = TrainingRun(config, info, manifest, stop)
        if info.rank == 0 and config.checkpoint.save:
            remove_partial_checkpoints(config.checkpoint.save)  # before any save of this run
        run.load()
        run.write_state(run_state.RUNNING)
        run.throughput.start()
        while not run.done():
            run.step()
            val_loss = run.evaluate_if_due()
            run.check_stop()
            run.log_if_due(val_loss)
            run.save_if_due()
        run.summary.iteration = run.iteration
        finished = run.iteration >= config.training.train_iters
        run.write_state(run_state.FINISHED if finished else run_state.STOPPED)
        if run.summary.stopped_by and info.rank == 0:
            logger.info("stopped at iteration %d (%s)", run.iteration, run.summary.stopped_by)
        return run.summary
    finally:
        if run is not None:
            run.close()
        else:  # failed while starting up: give the signals back all the same
            stop.close()
        destroy_parallel()
