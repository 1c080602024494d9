"""A small debug dataset in the synthesis output layout, made from MBPP's canonical solutions.

For the CPU default and tests only: nothing here was executed or written by a model. Wrong
code is the canonical solution with one simple mutation; feedback and explanations are
placeholders marked ``[synthetic ...]`` so nobody mistakes them for real data.

Layout (as `selfdebug synth` writes it): ``<out>/debug/part-0.parquet`` with
`selfdebug.schema.DEBUG_RECORD_COLUMNS` and ``<out>/samples/part-0.parquet`` with one row per
initial sample (task_id, source, prompt, sample_index, code, status, passed, total, feedback).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from selfdebug.schema import DEBUG_RECORD_COLUMNS

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


def _entry_point(test: str) -> str:
    m = re.match(r"\s*assert\s+\(?\s*(?:not\s+)?\(?([A-Za-z_]\w*)\s*\(", test)
    return m.group(1) if m else ""


def _prompt(text: str, tests: list[str]) -> str:
    return f"{text}\nYour code should pass this test:\n{tests[0]}"


def load_mbpp(path: str | Path, limit: int | None = None) -> list[dict]:
    rows = []
    with open(path) as fh:
        for line in fh:
            if line.strip():
                rows.append(json.loads(line))
            if limit is not None and len(rows) >= limit:
                break
    return rows


def fixture_rows(mbpp: list[dict]) -> tuple[list[dict], list[dict]]:
    """(debug records, initial samples) for the given MBPP problems."""
    debug, samples = [], []
    for i, prob in enumerate(mbpp):
        code = prob["code"].replace("\r\n", "\n").strip() + "\n"
        tests = list(prob["test_list"])
        task_id, total = f"mbpp/{prob['task_id']}", len(tests)
        prompt = _prompt(prob["text"], tests)
        base = {"task_id": task_id, "source": "mbpp", "prompt": prompt}
        samples.append({**base, "sample_index": 0, "code": code, "status": "passed",
                        "passed": total, "total": total, "feedback": ""})
        mutated = mutate(code)
        if mutated is None:
            continue
        wrong, why = mutated
        feedback = (f"[synthetic feedback: fixture data, not executed] `{tests[0]}` failed "
                    f"(the code was mutated: {why}).")
        samples.append({**base, "sample_index": 1, "code": wrong, "status": "failed",
                        "passed": 0, "total": total, "feedback": feedback})
        explanation = f"[synthetic explanation: fixture data] The code is wrong because {why}."
        attempts = [("refine", "", code, True), ("explain_refine", explanation, code, True)]
        if i % 5 == 0:  # a failed refinement, which SFT must skip
            attempts.append(("refine", "", wrong, False))
        for attempt, (mode, expl, refined, correct) in enumerate(attempts):
            debug.append({
                "record_id": f"{task_id}/1/{mode}/{attempt}",
                **base,
                "entry_point": _entry_point(tests[0]),
                "sample_index": 1,
                "wrong_code": wrong,
                "wrong_status": "failed",
                "wrong_passed": 0,
                "wrong_total": total,
                "feedback": feedback,
                "mode": mode,
                "attempt": attempt,
                "explanation": expl,
                "refined_code": refined,
                "refined_status": "passed" if correct else "failed",
                "refined_passed": total if correct else 0,
                "refined_total": total,
                "refined_feedback": "" if correct else feedback,
                "correct": correct,
                "sample_model": FIXTURE_MODEL,
                "refine_model": FIXTURE_MODEL,
                "sampling_params": json.dumps({"synthetic": True}),
                "pipeline_version": PIPELINE_VERSION,
            })
    return debug, samples


def build_fixture_dataset(out_dir: str | Path, mbpp_path: str | Path, problems: int = 64) -> Path:
    """Write the fixture dataset for the first ``problems`` MBPP problems; returns ``out_dir``."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    out = Path(out_dir)
    debug, samples = fixture_rows(load_mbpp(mbpp_path, problems))
    for sub, rows, columns in (("debug", debug, DEBUG_RECORD_COLUMNS), ("samples", samples, None)):
        (out / sub).mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(rows)
        if columns:
            table = table.select(list(columns))
        pq.write_table(table, out / sub / "part-0.parquet")
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
