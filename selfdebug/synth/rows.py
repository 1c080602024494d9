"""Row transforms of the synthesis pipeline: plain functions on dicts (Ray Data `map`s).

Program rule (HumanEval-style problems): the program is the extracted code; when the code
does not define the entry point and the problem has a ``completion_prefix`` (the HumanEval
prompt: imports, signature, docstring), the prefix is prepended, as for a completion.
MBPP problems have no prefix, so their program is always the extracted code.
"""

from __future__ import annotations

import json
import re

from selfdebug.llm import prompts
from selfdebug.llm.extract import extract_code, extract_explanation
from selfdebug.schema import Problem


def problem_row(problem: Problem, shard: int) -> dict:
    return {"task_id": problem.task_id, "source": problem.source, "prompt": problem.prompt,
            "entry_point": problem.entry_point,
            "completion_prefix": problem.completion_prefix, "shard": int(shard)}


def to_program(code: str, entry_point: str, completion_prefix: str) -> str:
    """The program to execute for ``code`` (see the module docstring)."""
    if completion_prefix and entry_point and not re.search(
            rf"^\s*(async\s+)?def\s+{re.escape(entry_point)}\s*\(", code, re.M):
        return completion_prefix + code
    return code


def generate_request(problem_prompt: str,
                     shots: list[tuple[str, str]] | None = None) -> str:
    """The generate conversation as a request: chat messages JSON (every generation stage
    takes it in ``messages``; an engine renders it with its model's template). ``shots``:
    few-shot turns first (base models)."""
    return json.dumps(prompts.generate_messages(problem_prompt, shots))


def extract_sample(row: dict) -> dict:
    """The program out of a sampled reply (the generation stage's columns → a sample's)."""
    del row["messages"]
    row["completion"] = row.pop("generated_text") or ""
    row["sample_tokens"] = int(row.pop("num_generated_tokens") or 0)
    row["code"] = to_program(extract_code(row["completion"]), row["entry_point"],
                             row["completion_prefix"])
    return row


def normalize(code: str) -> str:
    """What counts as an identical program: trailing spaces and blank edges ignored."""
    return "\n".join(line.rstrip() for line in code.strip("\n").splitlines())


def dedupe(rows: list[dict]) -> list[dict]:
    """One problem's samples → the unique programs, each the lowest sample_index of its
    kind, with ``duplicates`` = how many samples produced it. Failed generations are never
    merged (they are not programs; each is kept with its error)."""
    keep: dict[str, dict] = {}
    out = []
    for row in sorted(rows, key=lambda r: int(r["sample_index"])):
        if row.get("generation_error"):
            out.append({**row, "duplicates": 1})
            continue
        key = normalize(row["code"])
        if key in keep:
            keep[key]["duplicates"] += 1
        else:
            keep[key] = {**row, "duplicates": 1}
            out.append(keep[key])
    return sorted(out, key=lambda r: int(r["sample_index"]))


def is_refinable(row: dict) -> bool:
    """Wrong samples get refined; failed generations have no code to debug."""
    return row["status"] != "passed" and not row.get("generation_error")


def refine_requests(row: dict, *, modes: list[str]) -> list[dict]:
    """``flat_map``: one request per mode for a wrong sample (the generation stage makes
    the attempts, numbered in its ``sample_index``: the wrong sample's index travels as
    ``wrong_index`` meanwhile)."""
    if not is_refinable(row):
        return []
    out = []
    for mode in modes:
        messages = prompts.REFINE_MESSAGES[mode](row["prompt"], row["code"], row["feedback"])
        out.append({
            "task_id": row["task_id"], "source": row["source"], "prompt": row["prompt"],
            "entry_point": row["entry_point"], "completion_prefix": row["completion_prefix"],
            "shard": row["shard"], "wrong_index": int(row["sample_index"]),
            "wrong_code": row["code"], "wrong_status": row["status"],
            "wrong_passed": int(row["passed"]), "wrong_total": int(row["total"]),
            "feedback": row["feedback"], "mode": mode, "messages": json.dumps(messages),
        })
    return out


def extract_refinement(row: dict) -> dict:
    """Explanation and fixed program out of a refinement reply (the generation stage's
    columns → attempt, refine_tokens, refine_error; sample_index is the wrong sample's)."""
    del row["messages"]
    row["attempt"] = int(row.pop("sample_index"))
    row["sample_index"] = int(row.pop("wrong_index"))
    row["refine_tokens"] = int(row.pop("num_generated_tokens") or 0)
    row["refine_error"] = row.pop("generation_error") or ""
    reply = row.pop("generated_text") or ""
    row["explanation"] = extract_explanation(reply) if row["mode"] == "explain_refine" else ""
    row["refined_code"] = to_program(extract_code(reply), row["entry_point"],
                                     row["completion_prefix"])
    return row


def debug_record(row: dict, *, sample_model: str, refine_model: str, sampling_params: str,
                 pipeline_version: str) -> dict:
    """A finished refinement → one debug record (+ ``shard``, ``refine_tokens``,
    ``refine_error`` for the ledger, which drops them). A failed request is kept: empty
    code, status ``error``, the reason in ``refined_feedback``."""
    error = row.get("refine_error") or ""
    status = "error" if error else row["refined_status"]
    feedback = f"generation error: {error}" if error else row["refined_feedback"]
    return {
        "record_id": f"{row['task_id']}/{row['sample_index']}/{row['mode']}/{row['attempt']}",
        "task_id": row["task_id"], "source": row["source"], "prompt": row["prompt"],
        "entry_point": row["entry_point"], "sample_index": int(row["sample_index"]),
        "wrong_code": row["wrong_code"], "wrong_status": row["wrong_status"],
        "wrong_passed": int(row["wrong_passed"]), "wrong_total": int(row["wrong_total"]),
        "feedback": row["feedback"], "mode": row["mode"], "attempt": int(row["attempt"]),
        "explanation": row["explanation"], "refined_code": row["refined_code"],
        "refined_status": status, "refined_passed": 0 if error else int(row["refined_passed"]),
        "refined_total": int(row["refined_total"]), "refined_feedback": feedback,
        "correct": (not error) and status == "passed",
        "sample_model": sample_model, "refine_model": refine_model,
        "sampling_params": sampling_params, "pipeline_version": pipeline_version,
        "shard": int(row["shard"]), "refine_tokens": int(row.get("refine_tokens") or 0),
        "refine_error": error,
    }
