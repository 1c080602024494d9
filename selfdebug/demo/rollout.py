"""Samples, repairs and resamples of a model on problems, judged in the sandbox; the
held-out figures of one model (init@1, refine@1, expl+refine@1, repair and resample rates).
"""

from __future__ import annotations

from selfdebug.demo.engines import Engines, Sampling, Sandbox
from selfdebug.llm.extract import extract_code, extract_explanation
from selfdebug.llm.prompts import REFINE_MESSAGES, generate_messages


def sample(engines: Engines, sandbox: Sandbox, problems: list, n: int, sampling: Sampling,
           tag: str) -> list[dict]:
    """``n`` judged samples per problem: task_id, sample_index, code, status, feedback."""
    jobs = [(p, i) for p in problems for i in range(n)]
    texts = engines.generate([generate_messages(p.prompt) for p, _ in jobs], sampling,
                             [f"{tag}:{p.task_id}:{i}" for p, i in jobs])
    codes = [extract_code(t) for t in texts]
    verdicts = sandbox.judge([(p.task_id, c) for (p, _), c in zip(jobs, codes)])
    return [{"task_id": p.task_id, "sample_index": i, "code": c, "status": v["status"],
             "feedback": v["feedback"]} for (p, i), c, v in zip(jobs, codes, verdicts)]


def repair(engines: Engines, sandbox: Sandbox, problems: dict, wrong: list[dict],
           attempts: int, sampling: Sampling, tag: str, mode: str = "refine",
           first_attempt: int = 0) -> list[dict]:
    """``attempts`` repairs of each wrong sample (the model reads its code and feedback),
    numbered from ``first_attempt`` (the number seeds the request)."""
    jobs = [(w, a) for w in wrong for a in range(first_attempt, first_attempt + attempts)]
    requests = [REFINE_MESSAGES[mode](problems[w["task_id"]].prompt, w["code"], w["feedback"])
                for w, _ in jobs]
    texts = engines.generate(requests, sampling, [
        f"{tag}:{mode}:{w['task_id']}:{w['sample_index']}:{a}" for w, a in jobs])
    codes = [extract_code(t) for t in texts]
    verdicts = sandbox.judge([(w["task_id"], c) for (w, _), c in zip(jobs, codes)])
    return [{"task_id": w["task_id"], "sample_index": w["sample_index"], "attempt": a,
             "wrong_code": w["code"], "feedback": w["feedback"], "code": c,
             "explanation": extract_explanation(t), "status": v["status"]}
            for (w, a), c, t, v in zip(jobs, codes, texts, verdicts)]


def _rate(rows: list[dict]) -> float | None:
    return sum(r["status"] == "passed" for r in rows) / len(rows) if rows else None


def _by_hidden(rows: list[dict], hidden: set[str]) -> dict:
    return {"hidden": _rate([r for r in rows if r["task_id"] in hidden]),
            "regular": _rate([r for r in rows if r["task_id"] not in hidden])}


def evaluate(engines: Engines, sandbox: Sandbox, problems: list, fixed_wrong: list[dict] | None,
             cfg, seed: int, tag: str, hidden: set[str]) -> tuple[dict, list[dict]]:
    """Held-out figures of the engines' current model, and its init samples.

    ``fixed_wrong``: the base model's wrong programs (None: this is the base model, whose
    own wrong samples become that fixed set).
    """
    s = Sampling(cfg.temperature, cfg.top_p, cfg.max_tokens, seed)
    by_id = {p.task_id: p for p in problems}
    init = sample(engines, sandbox, problems, cfg.samples, s, f"{tag}:init")
    wrong = [r for r in init if r["status"] != "passed"]
    fixes = repair(engines, sandbox, by_id, wrong, 1, s, f"{tag}:eval")
    resampled = sample(engines, sandbox, [by_id[w["task_id"]] for w in wrong], 1, s,
                       f"{tag}:resample")
    fixed_set = fixed_wrong if fixed_wrong is not None else wrong
    fixed_fixes = fixes if fixed_wrong is None else repair(
        engines, sandbox, by_id, fixed_set, 1, s, f"{tag}:fixed")
    n = len(init)
    passed_init = n - len(wrong)
    out = {
        "samples": n,
        "init@1": passed_init / n,
        "refine@1": (passed_init + sum(f["status"] == "passed" for f in fixes)) / n,
        "repair_rate": _rate(fixes),
        "resample_rate": _rate(resampled),
        "fixed_set_repair_rate": _rate(fixed_fixes),
        "fixed_set_size": len(fixed_set),
        "init@1_by_kind": _by_hidden(init, hidden),
        "repair_rate_by_kind": _by_hidden(fixes, hidden),
        "fixed_set_repair_rate_by_kind": _by_hidden(fixed_fixes, hidden),
    }
    if cfg.explain:
        ex = repair(engines, sandbox, by_id, wrong, 1, s, f"{tag}:eval", "explain_refine")
        out["expl+refine@1"] = (passed_init + sum(f["status"] == "passed" for f in ex)) / n
        out["explained_share"] = _rate([{**f, "status": "passed" if f["explanation"] else ""}
                                        for f in ex])
    return out, init
