"""A small debug dataset in the synthesis output layout, made from MBPP's canonical solutions.

For the CPU default and tests only: nothing here was executed or written by a model. Wrong
code is the canonical solution with one simple mutation; feedback and explanations are
placeholders marked ``[synthetic ...]`` so nobody mistakes them for real data.

The problems come from `selfdebug.problems.load_problems` (MBPP train split: the task ids,
prompts and entry points every other stage uses), and the rows are written by the
synthesis shard writer, with a manifest: the result reads exactly like a `selfdebug synth`
output (`selfdebug.dataset.read_debug_records` / `read_samples`).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from selfdebug.schema import Problem

PIPELINE_VERSION = "fixture-1"
FIXTURE_MODEL = "fixture:mbpp-canonical"

# (pattern, replacement, what the bug is): applied to the first match only.
_MUTATIONS = [
    (r"range\(([^()]*)\)", r"range(\1 - 1)", "the loop stops one iteration early"),
    (r" \+ ", " - ", "it subtracts where it should add"),
    (r" <= ", " < ", "the comparison excludes the boundary value"),
    (r" < ", " <= ", "the comparison includes the boundary value"),
    (r" == ", " != ", "the equality test is inverted"),
    (r"\bTrue\b", "False", "it returns the opposite boolean"),
    (r"return (.+)", r"return None  # \1", "it returns None instead of the result"),
]


def mutate(code: str) -> tuple[str, str] | None:
    """The first mutation that changes ``code``: (wrong code, what is wrong), or None."""
    for pattern, repl, why in _MUTATIONS:
        wrong, n = re.subn(pattern, repl, code, count=1)
        if n and wrong != code:
            return wrong, why
    return None


def fixture_rows(problems: list[Problem]) -> tuple[list[dict], list[dict]]:
    """(debug records, initial samples) for the given problems (assert-tested, as MBPP)."""
    debug, samples = [], []
    for i, prob in enumerate(problems):
        code = prob.canonical_solution.strip() + "\n"
        tests = list(prob.tests.asserts)
        task_id, total = prob.task_id, len(tests)
        base = {"task_id": task_id, "source": prob.source, "prompt": prob.prompt,
                "entry_point": prob.entry_point}
        common = {"sample_model": FIXTURE_MODEL, "pipeline_version": PIPELINE_VERSION,
                  "sampling_params": json.dumps({"synthetic": True})}
        samples.append({**base, **common, "sample_index": 0, "code": code, "status": "passed",
                        "passed": total, "total": total, "feedback": "", "duplicates": 1})
        mutated = mutate(code)
        if mutated is None:
            continue
        wrong, why = mutated
        feedback = (f"[synthetic feedback: fixture data, not executed] `{tests[0]}` failed "
                    f"(the code was mutated: {why}).")
        samples.append({**base, **common, "sample_index": 1, "code": wrong, "status": "failed",
                        "passed": 0, "total": total, "feedback": feedback, "duplicates": 1})
        explanation = f"[synthetic explanation: fixture data] The code is wrong because {why}."
        attempts = [("refine", "", code, True), ("explain_refine", explanation, code, True)]
        if i % 5 == 0:  # a failed refinement, which SFT must skip
            attempts.append(("refine", "", wrong, False))
        for attempt, (mode, expl, refined, correct) in enumerate(attempts):
            debug.append({
                "record_id": f"{task_id}/1/{mode}/{attempt}", **base, **common,
                "sample_index": 1, "wrong_code": wrong, "wrong_status": "failed",
                "wrong_passed": 0, "wrong_total": total, "feedback": feedback, "mode": mode,
                "attempt": attempt, "explanation": expl, "refined_code": refined,
                "refined_status": "passed" if correct else "failed",
                "refined_passed": total if correct else 0, "refined_total": total,
                "refined_feedback": "" if correct else feedback, "correct": correct,
                "refine_model": FIXTURE_MODEL,
            })
    return debug, samples


def _fingerprint(problems: int) -> str:
    return f"fixture:{problems}"


def fixture_is_built(out_dir: str | Path, problems: int) -> bool:
    """Whether ``out_dir`` holds a complete fixture dataset of ``problems`` problems."""
    from selfdebug.synth import shards

    out = Path(out_dir)
    manifest = shards.read_manifest(out)
    files = manifest.get("shards", {}).get("0", {}).get("files", [])
    return manifest.get("fingerprint") == _fingerprint(problems) and bool(files) and all(
        (out / f).is_file() for f in files)


def build_fixture_dataset(out_dir: str | Path, mbpp_path: str | Path, problems: int = 64) -> Path:
    """Write the fixture dataset for the first ``problems`` MBPP train problems (one shard
    and a manifest, as `selfdebug synth` writes them); returns ``out_dir``."""
    from selfdebug.problems import load_problems
    from selfdebug.synth import shards

    out = Path(out_dir)
    chosen = load_problems(mbpp_path, split="train", limit=problems)
    debug, samples = fixture_rows(chosen)
    files = shards.write_shard(out, 0, samples, debug)
    manifest = shards.read_manifest(out)
    manifest["fingerprint"] = _fingerprint(problems)
    manifest["shards"]["0"] = {"task_ids": [p.task_id for p in chosen], "files": files}
    shards.write_manifest(out, manifest)
    (out / "FIXTURE.txt").write_text(
        "Synthetic fixture data for tests and the CPU default: wrong code is a mutated MBPP "
        "canonical solution; feedback and explanations are placeholders, not model output.\n"
    )
    return out


def default_mbpp_path() -> Path | None:
    import os

    env = os.environ.get("SELFDEBUG_SHARED_DATA")
    repo = Path(__file__).resolve().parents[2]
    for cand in ([Path(env)] if env else []) + [repo.parent / "shared" / "data"]:
        if (cand / "mbpp.jsonl").is_file():
            return cand / "mbpp.jsonl"
    return None
