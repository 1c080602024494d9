"""How many optimizer steps an SFT run takes, with the batch counted in *examples*.

``global_batch_size`` is the number of training examples per optimizer step (LeDex: 128),
not of packed rows: a packed row holds several examples, so counting rows would make a
"batch of 128" many times larger and leave a paper-sized run with fewer steps than its
warm-up. Rows are what the workers load, so the plan turns the example batch into rows
with the run's own packing factor (examples per row): gradient accumulation =
round(batch × rows / examples / (micro batch × workers)), at least 1. The same function
plans the run in the training loop, in the driver before it starts workers, and in
``selfdebug sft --dry-run``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class Schedule:
    world: int
    examples: int  # training examples of one epoch, all workers (after mixing)
    rows: int  # training rows of one epoch, all workers (packed or one example a row)
    tokens: int  # real tokens of one epoch, all workers
    micro_batch_size: int  # rows per worker per forward pass
    grad_accum: int  # micro-batches per optimizer step per worker
    steps_per_epoch: int
    total_steps: int
    warmup_steps: int

    @property
    def rows_per_step(self) -> int:
        return self.micro_batch_size * self.grad_accum * self.world

    @property
    def examples_per_step(self) -> float:
        return self.examples / self.rows * self.rows_per_step

    @property
    def tokens_per_step(self) -> float:
        return self.tokens / self.rows * self.rows_per_step

    @property
    def warmup_fraction(self) -> float:
        return self.warmup_steps / self.total_steps

    def summary(self) -> dict:
        return {**asdict(self), "rows_per_step": self.rows_per_step,
                "examples_per_step": round(self.examples_per_step, 2),
                "tokens_per_step": round(self.tokens_per_step, 1),
                "warmup_fraction": round(self.warmup_fraction, 4)}


def warmup_problem(cfg, total: int, examples: int) -> str | None:
    """Why warm-up cannot end within ``total`` steps (None when it can)."""
    if cfg.warmup_steps < total:
        return None
    return (f"warmup_steps {cfg.warmup_steps} ≥ total optimizer steps {total} "
            f"({examples} examples × {cfg.epochs} epoch(s) / ≈{cfg.global_batch_size} "
            f"examples per step): the learning rate would never reach lr {cfg.lr} and the "
            "cosine decay would never start; lower warmup_steps or global_batch_size")


def plan_schedule(cfg, *, world: int, examples: int, rows: int, tokens: int,
                  rows_per_worker: int | None = None, check: bool = True) -> Schedule:
    """The run's schedule for ``cfg`` (an `SFTConfig`); raises ValueError naming the numbers
    when the data cannot fill one step or (``check``) when warm-up would not end before the
    run does."""
    if examples <= 0 or rows <= 0:
        raise ValueError("no training examples (no correct refinements or passing samples, "
                         "or every example longer than max_seq_len?)")
    per_worker = rows // world if rows_per_worker is None else rows_per_worker
    m = cfg.micro_batch_size
    rows_wanted = cfg.global_batch_size * rows / examples  # rows holding one example batch
    accum = max(1, round(rows_wanted / (m * world)))
    steps_per_epoch = per_worker // (m * accum)
    if steps_per_epoch == 0:
        raise ValueError(
            f"global_batch_size {cfg.global_batch_size} examples needs {m} × {accum} rows per "
            f"worker per step, but each of the {world} worker(s) has only {per_worker} rows "
            f"({examples} examples in {rows} rows): lower global_batch_size or add data")
    total = cfg.epochs * steps_per_epoch
    if cfg.max_steps > 0:
        total = min(total, cfg.max_steps)
    if check and (problem := warmup_problem(cfg, total, examples)):
        raise ValueError(problem)
    return Schedule(world=world, examples=examples, rows=rows, tokens=tokens,
                    micro_batch_size=m, grad_accum=accum, steps_per_epoch=steps_per_epoch,
                    total_steps=total, warmup_steps=cfg.warmup_steps)


def row_counts(rows: list[dict]) -> tuple[int, int, int]:
    """(examples, rows, tokens) of packed rows (each row lists its ``example_ids``)."""
    return (sum(len(r["example_ids"]) for r in rows), len(rows),
            sum(len(r["input_ids"]) for r in rows))
