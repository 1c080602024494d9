"""`selfdebug execute` end to end on a real local Ray cluster and the real sandbox."""

from __future__ import annotations

import gzip
import json
import time

import pytest

from selfdebug.problems import load_problems
from selfdebug.sandbox.cli import main as execute


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def _run(tmp_path, problems, samples, *extra):
    out, summary = tmp_path / "results.jsonl", tmp_path / "summary.json"
    rc = execute(["--problems", str(problems), "--samples", str(samples), "--out", str(out),
                  "--summary", str(summary), *extra])
    results = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    return rc, results, (json.loads(summary.read_text()) if summary.exists() else None)


def test_bad_inputs_give_clear_errors(tmp_path, shared_data, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    rc, _, _ = _run(tmp_path, shared_data / "HumanEval.jsonl.gz", empty)
    assert rc == 2 and "samples file is empty" in capsys.readouterr().err
    rc, _, _ = _run(tmp_path, tmp_path / "nope.jsonl", empty)
    assert rc == 2 and "nope.jsonl" in capsys.readouterr().err
    rc, _, _ = _run(tmp_path, shared_data / "HumanEval.jsonl.gz", tmp_path / "missing.jsonl")
    assert rc == 2 and "samples file not found" in capsys.readouterr().err


def test_output_paths_are_checked_before_anything_starts(tmp_path, shared_data, capsys):
    samples = _write(tmp_path / "s.jsonl", [{"task_id": "HumanEval/0", "completion": "x"}])
    a_file = tmp_path / "file"
    a_file.write_text("")
    for out, summary, message in [
            (tmp_path, None, "is a directory"),
            (a_file / "r.jsonl", None, f"{a_file} is a file, not a directory"),
            (tmp_path / "r.jsonl", tmp_path, "--summary"),
            (tmp_path / "r.jsonl", a_file / "deeper" / "s.json", "is a file")]:
        t0 = time.monotonic()
        rc = execute(["--problems", str(shared_data / "HumanEval.jsonl.gz"), "--samples",
                      str(samples), "--out", str(out)]
                     + (["--summary", str(summary)] if summary else []))
        err = capsys.readouterr().err
        assert rc == 2 and message in err, err
        assert time.monotonic() - t0 < 10  # no cluster was started
    assert a_file.read_text() == "" and not (tmp_path / "r.jsonl").exists()


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_bad_bytes_and_a_failed_final_write_lose_nothing(tmp_path, shared_data, ray_cluster,
                                                         monkeypatch, capsys):
    """A non-UTF-8 line is one error row naming file and line; a final write that fails
    (disk full, simulated by a fake write layer: no tmpfs can be mounted for a test here)
    leaves every verdict in `<out>.partial` and exits 3 with a message naming it."""
    from selfdebug.sandbox import cli

    he = [json.loads(line) for line in gzip.open(shared_data / "HumanEval.jsonl.gz", "rt")][:3]
    samples = tmp_path / "s.jsonl"
    good = [json.dumps({"task_id": r["task_id"], "completion": r["canonical_solution"]})
            for r in he]
    samples.write_bytes((good[0] + "\n").encode() + b'{"task_id": "HumanEval/1", "x": "\xff\xfe"}\n'
                        + "".join(g + "\n" for g in good[1:]).encode())
    rc, results, _ = _run(tmp_path, shared_data / "HumanEval.jsonl.gz", samples)
    assert rc == 0 and [r["status"] for r in results] == ["passed", "error", "passed", "passed"]
    assert "s.jsonl line 2: " in results[1]["feedback"]
    assert "not UTF-8" in results[1]["feedback"]

    def disk_full(path, lines):
        raise OSError(28, "No space left on device", str(path))

    monkeypatch.setattr(cli, "write_durably", disk_full)
    out = tmp_path / "again.jsonl"
    rc = execute(["--problems", str(shared_data / "HumanEval.jsonl.gz"), "--samples",
                  str(samples), "--out", str(out)])
    err = capsys.readouterr().err
    partial = tmp_path / "again.jsonl.partial"
    assert rc == 3 and "No space left on device" in err and str(partial) in err
    kept = [json.loads(line) for line in partial.read_text().splitlines()]
    assert sorted(r["row"] for r in kept) == [1, 3, 4]  # every judged sample
    assert all(r["status"] == "passed" for r in kept)


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_mixed_samples_every_line_gets_a_result(tmp_path, shared_data, ray_cluster):
    he = [json.loads(line) for line in gzip.open(shared_data / "HumanEval.jsonl.gz", "rt")][:5]
    rows = []
    for r in he:
        rows.append({"task_id": r["task_id"], "completion": r["canonical_solution"]})
        rows.append({"task_id": r["task_id"], "solution": r["prompt"] + "    return None\n"})
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps(r) + "\n" for r in rows)
                       + "{broken json\n"
                       + json.dumps({"task_id": "HumanEval/99999", "completion": "x"}) + "\n"
                       + json.dumps({"task_id": "HumanEval/0"}) + "\n"
                       + json.dumps([1, 2]) + "\n")
    rc, results, summary = _run(tmp_path, shared_data / "HumanEval.jsonl.gz", samples,
                                "--k", "1,2")
    assert rc == 0
    assert len(results) == len(rows) + 4  # one line per sample line, in input order
    assert [r["row"] for r in results] == sorted(r["row"] for r in results)
    by_row = {r["row"]: r for r in results}
    for i, r in enumerate(rows, 1):
        assert by_row[i]["task_id"] == r["task_id"]
        assert by_row[i]["status"] == ("passed" if "completion" in r else "failed")
    tail = [by_row[len(rows) + i] for i in range(1, 5)]
    assert all(t["status"] == "error" for t in tail)
    assert "malformed JSON" in tail[0]["feedback"]
    assert "unknown task_id 'HumanEval/99999'" in tail[1]["feedback"]
    assert "needs a string 'completion' or 'solution'" in tail[2]["feedback"]
    assert "expected a JSON object" in tail[3]["feedback"]
    # pass@k over the benchmark's tasks: HumanEval/0 has 3 samples (1 passing)
    assert summary["status"]["passed"] == 5 and summary["tasks"] == 5
    assert summary["pass@1"] == pytest.approx(100 * (4 * 0.5 + 1 / 3) / 5, abs=0.01)
    assert "bwrap" in summary["isolation"] or "seccomp" in summary["isolation"]
    assert summary["metadata"]["git_revision"]


@pytest.mark.ray
@pytest.mark.timeout(300)
def test_killed_sandbox_actor_loses_no_sample(tmp_path, shared_data, ray_cluster):
    """SIGKILL a sandbox actor while it judges: Ray restarts it, its chunk is retried, and
    every sample still gets its real verdict."""
    import os
    import re
    import signal
    import threading
    import time
    from pathlib import Path

    he = [json.loads(line) for line in gzip.open(shared_data / "HumanEval.jsonl.gz", "rt")][:8]
    slow = "    import time\n    time.sleep(0.2)\n"  # keeps the actors busy long enough
    rows = [{"task_id": r["task_id"], "completion": slow + r["canonical_solution"]}
            for r in he for _ in range(6)]
    samples = _write(tmp_path / "s.jsonl", rows)
    killed: list[int] = []

    def parent(pid: int) -> int:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])

    # this session's raylet (another Ray cluster on the machine must not be hit)
    gcs = ray_cluster.get_runtime_context().gcs_address.encode()

    def kill_one():
        deadline = time.time() + 120
        while not killed and time.time() < deadline:
            # The actor's own process, while its title says it is judging a chunk: a Ray
            # worker is a child of this cluster's raylet (processes the actor forks keep
            # its title, and its own title changes between calls: the title cannot tell).
            for pid in os.listdir("/proc"):
                try:
                    cmd = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
                    if not (pid.isdigit() and re.search(
                            r"ray::SandboxActor\.(run_rows|judge_rows)", cmd)):
                        continue
                    up = Path(f"/proc/{parent(int(pid))}/cmdline").read_bytes()
                    raylet = b"raylet" in up and gcs in up
                except (OSError, ValueError, IndexError):
                    continue
                if raylet:
                    os.kill(int(pid), signal.SIGKILL)
                    killed.append(int(pid))
                    return
            time.sleep(0.1)

    killer = threading.Thread(target=kill_one, daemon=True)
    killer.start()
    rc, results, summary = _run(tmp_path, shared_data / "HumanEval.jsonl.gz", samples,
                                "--actors", "2", "--workers-per-actor", "1")
    killer.join(timeout=5)
    assert killed, "no sandbox actor was seen running"
    assert rc == 0 and len(results) == len(rows)
    assert [r["status"] for r in results] == ["passed"] * len(rows), summary["status"]
    # the summary says what was recovered
    assert summary["actors_restarted"] >= 1 and summary["chunks_retried"] >= 1
    assert summary["rows_errored_by_actor_failures"] == 0


def _canonical(tmp_path, shared_data, name, **load):
    problems = load_problems(shared_data / name, **load)
    samples = _write(tmp_path / "s.jsonl",
                     [{"task_id": p.task_id, "solution": p.canonical_solution} for p in problems])
    rc, results, summary = _run(tmp_path, shared_data / name, samples)
    assert rc == 0 and len(results) == len(problems)
    failures = [(r["task_id"], r["status"], r["feedback"][:200]) for r in results
                if r["status"] != "passed"]
    return len(problems), failures, summary


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(600)
def test_humaneval_canonical_all_pass(tmp_path, shared_data, ray_cluster):
    n, failures, summary = _canonical(tmp_path, shared_data, "HumanEval.jsonl.gz")
    assert n == 164 and failures == [] and summary["pass@1"] == 100.0


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(900)
def test_mbpp_canonical_all_pass(tmp_path, shared_data, ray_cluster):
    n, failures, _ = _canonical(tmp_path, shared_data, "mbpp.jsonl")
    assert n == 974 and failures == []


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(1200)
def test_humaneval_plus_canonical_all_pass_base_and_plus(tmp_path, shared_data, ray_cluster):
    n, failures, _ = _canonical(tmp_path, shared_data, "HumanEvalPlus-v0.1.10.jsonl.gz")
    assert n == 164 and failures == []


@pytest.mark.slow
@pytest.mark.ray
@pytest.mark.timeout(1200)
def test_codecontests_canonical_at_least_199_of_200(tmp_path, shared_data, ray_cluster):
    n, failures, _ = _canonical(tmp_path, shared_data, "codecontests_graph_sample200.jsonl")
    assert n == 200 and len(failures) <= 1, failures


@pytest.mark.ray
@pytest.mark.timeout(120)
def test_sandbox_actor_as_a_plain_ray_actor(ray_cluster, tmp_path):
    from selfdebug.sandbox.actor import SandboxActor
    from selfdebug.sandbox.judge import SandboxConfig

    problems = {p.task_id: p for p in load_problems("humaneval")[:3]}
    ref = ray_cluster.put(problems)
    actor = ray_cluster.remote(num_cpus=0.25)(SandboxActor).remote(
        ref, SandboxConfig(cache_dir=str(tmp_path)), 2)
    rows = [(t, p.canonical_solution) for t, p in problems.items()]
    rows += [(t, p.prompt + "    return 42\n") for t, p in problems.items()]
    results = ray_cluster.get(actor.run_rows.remote(rows), timeout=90)
    assert [r["status"] for r in results] == ["passed"] * 3 + ["failed"] * 3
    assert "bwrap" in ray_cluster.get(actor.isolation.remote()) or results[0]["isolation"]
    ray_cluster.kill(actor)


@pytest.mark.ray
@pytest.mark.timeout(180)
def test_execute_on_its_own_cluster_leaves_no_process_behind(tmp_path, shared_data):
    """Without --address the command starts a local cluster and stops it before it exits
    (itself, not in Ray's exit hooks): no Ray process of that cluster survives it."""
    import os
    import shutil
    import subprocess
    import sys
    import tempfile
    import time
    from pathlib import Path

    he = [json.loads(line) for line in gzip.open(shared_data / "HumanEval.jsonl.gz", "rt")][:3]
    samples = _write(tmp_path / "s.jsonl", [{"task_id": r["task_id"],
                                           "completion": r["canonical_solution"]} for r in he])
    # The cluster's temp dir lands here, so its processes name it. Short: Ray's socket
    # paths under it must fit AF_UNIX's 107 bytes.
    ray_tmp = Path(tempfile.mkdtemp(prefix="sd-", dir="/tmp"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env["TMPDIR"] = str(ray_tmp)

    def ours() -> dict[int, str]:
        found = {}
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            except (OSError, UnicodeDecodeError):
                continue
            if str(ray_tmp) in cmd and int(pid) != proc.pid:
                found[int(pid)] = cmd
        return found

    proc = subprocess.Popen(
        [sys.executable, "-m", "selfdebug.cli", "execute", "--problems",
         str(shared_data / "HumanEval.jsonl.gz"), "--samples", str(samples),
         "--out", str(tmp_path / "r.jsonl")], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    seen: dict[int, str] = {}
    while proc.poll() is None:
        seen.update(ours())
        time.sleep(0.1)
    out, err = proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    assert json.loads(out)["status"]["passed"] == 3
    assert any("gcs_server" in c for c in seen.values()), "the cluster was never seen"
    assert any("monitor.py" in c for c in seen.values())
    left = ours()
    shutil.rmtree(ray_tmp, ignore_errors=True)
    assert not left, f"still running after the command exited: {list(left.values())}"
