"""The stall watchdog and the resource sizing, without a cluster (no Ray started here)."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from selfdebug.progress import StallError, Watchdog, watch
from selfdebug.resources import Holder, fit_to_cluster


def test_stalled_block_fails_with_the_declared_resources():
    t0 = time.monotonic()
    with pytest.raises(StallError) as err:
        with Watchdog("demo", 0.6, declared={"sandbox actors": "2 × 0.5 CPU"}, log=None):
            # blocked in a lock, as a driver waiting on a dataset that never moves (a flag
            # set by _thread.interrupt_main alone never wakes this)
            threading.Event().wait()
    assert time.monotonic() - t0 < 5
    msg = str(err.value)
    assert "demo: no progress for" in msg and "stall_timeout_s=0.6" in msg
    assert "declared by this job: sandbox actors: 2 × 0.5 CPU" in msg


def test_probe_changes_and_ticks_keep_it_alive():
    counter = {"n": 0}

    def probe():
        counter["n"] += 1
        return counter["n"]

    lines = []
    with Watchdog("busy", 0.5, probe=probe, poll_s=0.1, log=lines.append, log_every_s=0):
        time.sleep(1.5)  # three timeouts long, but the probe moves
    assert lines and lines[0].startswith("[busy]")
    with Watchdog("ticked", 0.5, poll_s=0.1, log=None) as wd:
        for _ in watch(range(15), wd):
            time.sleep(0.1)


def test_other_errors_pass_through_and_zero_disables():
    with pytest.raises(ZeroDivisionError):
        with Watchdog("err", 5, log=None):
            1 / 0  # noqa: B018
    with Watchdog("off", 0, log=None):
        time.sleep(0.3)


@dataclass
class _Engine:
    num_cpus: float | None = 0.5


@dataclass
class _Cfg:
    sandbox_cpus_per_actor: float = 0.5
    engine: _Engine = field(default_factory=_Engine)


def test_fit_scales_holders_to_the_share_of_a_small_cluster(monkeypatch):
    limits = []
    monkeypatch.setattr("selfdebug.resources.limit_ray_data", limits.append)
    holders = [Holder("sandbox", 2, 0.5, "sandbox_cpus_per_actor"),
               Holder("engines", 1, 0.5, "engine.num_cpus", in_ray_data=False)]
    cfg, sized = fit_to_cluster(_Cfg(), holders, cpus=2, log=None)
    assert sum(h.count * h.cpus for h in sized) <= 1.0 + 1e-9
    assert cfg.sandbox_cpus_per_actor == pytest.approx(1 / 3, abs=1e-3)
    assert cfg.engine.num_cpus == pytest.approx(1 / 3, abs=1e-3)
    # Ray Data: reset, then all but the engines
    assert limits == [None, pytest.approx(2 - 1 / 3, abs=1e-3)]
    big, same = fit_to_cluster(_Cfg(), holders, cpus=64, log=None)
    assert big == _Cfg() and same == holders  # a large cluster: untouched


def test_rl_actors_fit_a_two_cpu_head(monkeypatch):
    """`selfdebug rl`'s CPU default asks for more than a 2-CPU head has (engine, learner,
    sandbox and reward actors, all up together): scaled to the whole head, every field."""
    from selfdebug.config import load_config
    from selfdebug.resources import rl_holders
    from selfdebug.rl.config import RLConfig

    monkeypatch.setattr("selfdebug.resources.limit_ray_data", lambda cpus: None)
    rl = load_config(RLConfig, Path(__file__).resolve().parents[1] / "jobs/configs/rl-cpu.yaml")
    holders = rl_holders(rl)
    assert {h.name for h in holders} == {"vLLM engines", "sandbox actors", "reward workers",
                                         "Ray Train learner workers"}
    assert sum(h.count * h.cpus for h in holders) > 2
    cfg, sized = fit_to_cluster(rl, holders, share=1.0, cpus=2, log=None)
    assert sum(h.count * h.cpus for h in sized) <= 2 + 1e-9
    assert sum(h.count * h.cpus for h in rl_holders(cfg)) <= 2 + 1e-9  # written into cfg
    assert cfg.cpus_per_worker < rl.cpus_per_worker and cfg.engine.num_cpus is not None
    assert fit_to_cluster(rl, holders, share=1.0, cpus=4, log=None)[0] == rl


def test_the_demo_refuses_a_cluster_smaller_than_its_actors():
    """`selfdebug demo` sizes its trainer's threads by its CPUs, so it is not scaled down
    like the stages: joined to a smaller head it fails at once, naming what it needs."""
    from selfdebug.config import load_config
    from selfdebug.demo.config import DemoConfig
    from selfdebug.errors import ClusterError
    from selfdebug.resources import demo_holders, require_cpus

    demo = load_config(DemoConfig, Path(__file__).resolve().parents[1] / "jobs/configs/demo-cpu.yaml")
    holders = demo_holders(demo)  # 2 engines × 0.5, 1 sandbox actor × 0.5, the trainer's 2
    with pytest.raises(ClusterError, match=r"hold 3.5 CPUs .*trainer 1 × 2 CPU.* has 2; .*"
                                           r"--num-cpus 4.*sft.cpus_per_worker"):
        require_cpus(holders, cpus=2)
    require_cpus(holders, cpus=4)  # the demo's own local cluster
    require_cpus(holders, cpus=0)  # autoscaling from zero: not judged
