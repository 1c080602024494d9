"""Resumable checkpoints: DeepSpeed state + trainer position + RNG, under Ray or not.

A checkpoint directory holds DeepSpeed's files (tag ``ds``: model, ZeRO optimizer shards,
LR scheduler), ``trainer_state.json`` (step, epoch, tokens seen) and ``rng_rank<r>.pt``.
Under Ray Train each worker writes into its own temporary directory and
``ray.train.report`` merges them into one directory under ``storage_path``; a restarted run
(same name and storage path) gets it back from ``ray.train.get_checkpoint()``.
Without Ray every rank writes into ``<run_dir>/checkpoint_<step>`` (a shared filesystem,
as torchrun on one box has) and rank 0 marks it complete last.
"""

from __future__ import annotations

import contextlib
import json
import random
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

TAG = "ds"
STATE_FILE = "trainer_state.json"
COMPLETE = ".complete"


@dataclass
class TrainState:
    step: int = 0  # optimizer steps done
    tokens: int = 0  # real (non-pad) tokens trained on, all workers
    finished: bool = False


def _rng_state() -> dict:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(),
            "python": random.getstate(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None}


def _set_rng_state(s: dict) -> None:
    torch.set_rng_state(s["torch"])
    np.random.set_state(s["numpy"])
    random.setstate(s["python"])
    if s.get("cuda") is not None and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(s["cuda"])


def save(engine, state: TrainState, ckpt_dir: Path, rank: int) -> None:
    """Write this rank's part of a checkpoint (a collective: every rank calls it)."""
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    engine.save_checkpoint(str(ckpt_dir), tag=TAG)
    torch.save(_rng_state(), ckpt_dir / f"rng_rank{rank}.pt")
    if rank == 0:
        (ckpt_dir / STATE_FILE).write_text(json.dumps(asdict(state), indent=2) + "\n")


def load(engine, ckpt_dir: Path, rank: int) -> TrainState:
    """Restore model, optimizer, scheduler, RNG and position from ``ckpt_dir``."""
    path, _ = engine.load_checkpoint(str(ckpt_dir), tag=TAG)
    if path is None:
        raise RuntimeError(f"DeepSpeed found no checkpoint in {ckpt_dir}")
    rng = ckpt_dir / f"rng_rank{rank}.pt"
    if rng.exists():
        _set_rng_state(torch.load(rng, weights_only=False))
    return TrainState(**json.loads((ckpt_dir / STATE_FILE).read_text()))


def latest_local(run_dir: Path) -> Path | None:
    done = sorted(p for p in run_dir.glob("checkpoint_*") if (p / COMPLETE).exists())
    return done[-1] if done else None


@contextlib.contextmanager
def restored_dir(in_ray: bool, run_dir: Path) -> Iterator[Path | None]:
    """The directory of the checkpoint to resume from (None: start fresh)."""
    if in_ray:
        import ray.train

        ckpt = ray.train.get_checkpoint()
        if ckpt is None:
            yield None
        else:
            with ckpt.as_directory() as d:
                yield Path(d)
    else:
        yield latest_local(run_dir)


def wait_until_registered(in_ray: bool) -> None:
    """Return once Ray Train's controller has taken every worker's last checkpoint report.

    For the ``fail_after_step`` test hook: a worker that raises right after
    ``ray.train.report`` can be polled before another worker's report is queued, and the
    controller then drops that checkpoint (seen in CI; a slow upload on one rank makes it
    certain). Without Ray, ``commit`` has already marked the checkpoint complete.
    """
    if not in_ray:
        return
    import torch.distributed as dist
    from ray.train.v2._internal.execution.context import get_train_context

    # Internal (Ray pinned to 2.60): the controller's poll takes the report off this
    # size-1 queue and calls task_done; after the barrier all ranks' reports are taken.
    get_train_context().execution_context.result_queue.join()
    if dist.is_initialized():
        dist.barrier()


def commit(engine, state: TrainState, metrics: dict, rank: int, in_ray: bool, run_dir: Path,
           keep: int, extra: Callable[[Path], None] | None = None) -> None:
    """Save a checkpoint for ``state.step`` and publish it (``extra`` adds files on rank 0)."""
    name = f"checkpoint_{state.step:07d}"
    if in_ray:
        import ray.train

        tmp = Path(tempfile.mkdtemp(prefix="sft-ckpt-"))
        try:
            save(engine, state, tmp, rank)
            if extra is not None and rank == 0:
                extra(tmp)
            ray.train.report(metrics, checkpoint=ray.train.Checkpoint.from_directory(tmp),
                             checkpoint_dir_name=name)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return
    import torch.distributed as dist

    ckpt_dir = run_dir / name
    save(engine, state, ckpt_dir, rank)
    if extra is not None and rank == 0:
        extra(ckpt_dir)
    dist.barrier()  # every rank's shard is on disk before it counts as complete
    if rank == 0:
        (ckpt_dir / COMPLETE).touch()
        done = sorted(p for p in run_dir.glob("checkpoint_*") if (p / COMPLETE).exists())
        for old in done[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    dist.barrier()
