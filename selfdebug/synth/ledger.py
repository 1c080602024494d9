"""The ledger: one Ray actor that groups samples per problem and commits finished shards.

Why an actor: the pipeline is one lazy stream, but two steps need to see a whole problem —
dedupe (all n samples of a problem) and shard assembly (every unique sample and every
refinement of every problem of a shard). Rows reach the ledger as they stream past; it
answers as soon as a problem (or shard) is complete, so nothing waits for the whole
dataset — only for the few problems in flight.

Exactly once: upstream stages are at-least-once (Ray retries tasks and restarts dead
actors); the ledger keys every row — (task_id, sample_index) or record_id — so a row that
arrives twice is stored once. A group asked for again is emitted again, and the repeats
are absorbed here downstream. A problem that never completes (rows lost with a dead
worker) leaves its shard uncommitted; the next run of the same command redoes it.
"""

from __future__ import annotations

import time
from collections import defaultdict

from selfdebug.synth import rows as R
from selfdebug.synth import shards as S
from selfdebug.synth.stats import shard_stats


class Ledger:
    def __init__(self, out_dir: str, plan: dict[int, list[str]], n_samples: int,
                 debug_per_wrong: int, fingerprint: str):
        self.out_dir = out_dir
        self.n_samples = n_samples
        self.debug_per_wrong = debug_per_wrong
        self.fingerprint = fingerprint
        self.manifest = S.read_manifest(out_dir)
        self.manifest["fingerprint"] = fingerprint
        done = set(self.manifest["shards"])
        self.open = {s: set(t) for s, t in plan.items() if str(s) not in done}
        self.plan = plan
        self.shard_of = {t: s for s, ts in plan.items() for t in ts}
        self.raw: dict[str, dict[int, dict]] = defaultdict(dict)  # all n samples
        self.groups: dict[str, list[dict]] = {}  # emitted, deduped
        self.samples: dict[str, dict[int, dict]] = defaultdict(dict)  # executed
        self.expected_debug: dict[str, int] = {}
        self.debug: dict[str, dict[str, dict]] = defaultdict(dict)
        self.done: set[str] = set()
        # rows that arrived again (a retried task or restarted actor upstream), per problem:
        # stored once, counted for the report
        self.repeats: dict[str, int] = defaultdict(int)
        self.committed: list[int] = []
        self.started = time.time()

    # -------------------------------------------------------------- dedupe
    def group(self, rows: list[dict]) -> list[dict]:
        """Add sampled rows; return the deduped samples of every problem they complete
        (again, for a problem already emitted: a retried upstream task)."""
        touched = []
        for row in rows:
            task = row["task_id"]
            if task in self.done:
                self.repeats[task] += 1
                continue
            if task in self.groups or int(row["sample_index"]) in self.raw[task]:
                self.repeats[task] += 1
            self.raw[task].setdefault(int(row["sample_index"]), row)
            touched.append(task)
        out = []
        for task in dict.fromkeys(touched):
            if task in self.groups:
                out += self.groups[task]
            elif len(self.raw[task]) >= self.n_samples:
                self.groups[task] = R.dedupe(list(self.raw.pop(task).values()))
                out += self.groups[task]
        return out

    # -------------------------------------------------------------- results
    def add_samples(self, rows: list[dict]) -> None:
        for row in rows:
            task = row["task_id"]
            if int(row["sample_index"]) in self.samples[task] or task in self.done:
                self.repeats[task] += 1
            self.samples[task].setdefault(int(row["sample_index"]), row)
            if len(self.samples[task]) == len(self.groups.get(task, ())):
                wrong = sum(R.is_refinable(r) for r in self.samples[task].values())
                self.expected_debug[task] = wrong * self.debug_per_wrong
        self._check({r["task_id"] for r in rows})

    def add_debug(self, rows: list[dict]) -> None:
        for row in rows:
            if row["record_id"] in self.debug[row["task_id"]] or row["task_id"] in self.done:
                self.repeats[row["task_id"]] += 1
            self.debug[row["task_id"]].setdefault(row["record_id"], row)
        self._check({r["task_id"] for r in rows})

    def _check(self, tasks: set[str]) -> None:
        for task in tasks:
            if task in self.done or task not in self.expected_debug:
                continue
            if len(self.debug[task]) >= self.expected_debug[task]:
                self.done.add(task)
                shard = self.shard_of[task]
                if shard in self.open and self.open[shard] <= self.done:
                    self._commit(shard)

    def _commit(self, shard: int) -> None:
        tasks = self.plan[shard]
        samples = [r for t in tasks for r in self.samples[t].values()]
        debug = [r for t in tasks for r in self.debug[t].values()]
        files = S.write_shard(self.out_dir, shard, samples, debug)
        self.manifest["shards"][str(shard)] = {
            "task_ids": tasks, "files": files, "stats": shard_stats(samples, debug),
            "committed_at": time.time(), "repeated_rows": sum(self.repeats[t] for t in tasks),
        }
        S.write_manifest(self.out_dir, self.manifest)
        self.committed.append(shard)
        del self.open[shard]
        for t in tasks:  # free the memory: the shard is on disk
            for d in (self.groups, self.samples, self.debug, self.expected_debug):
                d.pop(t, None)

    # -------------------------------------------------------------- status
    def progress(self) -> dict:
        return {"committed": list(self.committed), "open": sorted(self.open),
                "problems_done": len(self.done), "repeated_rows": sum(self.repeats.values())}


def start_ledger(*args):
    """The ledger actor, on this (the driver's) node so a local out_dir works; it holds no
    CPU (it only files rows) and is not restarted: losing it fails the run, which resumes."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    node = ray.get_runtime_context().get_node_id()
    actor = ray.remote(Ledger).options(
        num_cpus=0, max_restarts=0,
        scheduling_strategy=NodeAffinitySchedulingStrategy(node, soft=False))
    return actor.remote(*args)
