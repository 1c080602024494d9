"""One SFT process kept alive for many trainings in a row.

`selfdebug.train.cli.run(cfg, resident=...)` hands the training to this actor instead of a
new Ray Train run: it runs the same `train_loop` in its single-process mode (data read by
the worker, checkpoints under ``run_dir``, the model written to ``out_dir``). For callers
that train many small models back to back on one machine, the demo's rounds: each Ray
Train run starts a controller and a worker process that imports torch, DeepSpeed and
transformers again, ≈ 15 s of a 30-60 s training on 2 cores. One worker only (no GPU): a
run across workers is what Ray Train is for.
"""

from __future__ import annotations

import os
import socket
from dataclasses import asdict


class _TrainerProcess:
    def __init__(self):
        with socket.socket() as s:  # gloo's rendezvous port: free now, this process's own
            s.bind(("127.0.0.1", 0))
            os.environ["MASTER_PORT"] = str(s.getsockname()[1])
        import selfdebug.train.loop  # noqa: F401  what every training imports, once

    def train(self, config: dict) -> dict:
        from selfdebug.train.loop import train_loop

        return train_loop(config)


class ResidentTrainer:
    """A Ray actor of ``cpus`` CPUs that trains one SFT config after another.

    A crash of the process restarts it once and retries the training, which resumes from
    the run's last checkpoint (as Ray Train's ``max_failures=1`` would)."""

    def __init__(self, cpus: float, ready_timeout_s: float = 300.0):
        import ray

        self.actor = ray.remote(_TrainerProcess).options(
            num_cpus=cpus, max_restarts=1, max_task_retries=1).remote()
        # awaited at the first fit, so that the caller's work until then overlaps the
        # process's start-up (torch and transformers imports)
        self._ready = self.actor.__ray_ready__.remote()
        self.cpus, self.ready_timeout_s = cpus, ready_timeout_s

    def fit(self, cfg) -> None:
        """Train ``cfg`` (an `SFTConfig`, paths absolute) to the end with its
        ``cpus_per_worker`` threads; raises what the training raised."""
        import ray

        if cfg.num_workers != 1 or cfg.use_gpu:
            raise ValueError(f"a resident trainer runs one CPU worker; this config asks for "
                             f"num_workers={cfg.num_workers}, use_gpu={cfg.use_gpu}: "
                             "train it with Ray Train (no resident trainer)")
        if self._ready is not None:  # a placement that never comes must not hang the run
            done, _ = ray.wait([self._ready], timeout=self.ready_timeout_s)
            if not done:
                from selfdebug.errors import ClusterError

                raise ClusterError(
                    f"the trainer process (a Ray actor of {self.cpus:g} CPUs) did not start "
                    f"within {self.ready_timeout_s:g} s",
                    "is the cluster short of CPUs? (`ray status`: free and pending "
                    "resources)")
            ray.get(self._ready)  # the process's own start-up error, if any
            self._ready = None
        ray.get(self.actor.train.remote(asdict(cfg)))

    def shutdown(self) -> None:
        import ray

        ray.kill(self.actor)
