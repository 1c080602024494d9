"""Faults and bad input (issue 13): every expected failure is one or two lines naming the
thing and the fix, with a documented exit code, found before any cluster starts; nothing
already computed is lost.

Disk full: a real tmpfs of a few hundred KiB mounted for the test (root can mount here);
where mounting is refused, a fake filesystem layer makes ``os.fsync`` (which every durable
write calls) fail with ENOSPC under the test directory — the `small_disk` fixture says
which in its ``kind``. Tests that need a Ray cluster are marked ``ray``; the others start
nothing (a tripwire fails them if anything tries to start Ray).
"""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import pytest

from selfdebug import cli, errors

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "jobs" / "configs"


# ------------------------------------------------------------------ helpers
class Disk:
    def __init__(self, path: Path, kind: str, monkeypatch):
        self.path, self.kind, self._mp, self.full = path, kind, monkeypatch, False

    def fill(self) -> None:
        """Use up every free byte (tmpfs), or make durable writes under ``path`` fail."""
        self.full = True
        if self.kind == "fake":
            real = os.fsync

            def fsync(fd):
                if self.full and os.readlink(f"/proc/self/fd/{fd}").startswith(str(self.path)):
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real(fd)

            self._mp.setattr(os, "fsync", fsync)
            return
        with open(self.path / "filler", "wb", buffering=0) as f:
            try:
                while True:
                    f.write(b"\0" * 4096)
            except OSError as e:
                assert e.errno == errno.ENOSPC

    def free(self) -> None:
        self.full = False
        (self.path / "filler").unlink(missing_ok=True)


@pytest.fixture
def small_disk(tmp_path, monkeypatch):
    mnt = tmp_path / "disk"
    mnt.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=512k", "tmpfs", str(mnt)],
                             capture_output=True).returncode == 0
    yield Disk(mnt, "tmpfs" if mounted else "fake", monkeypatch)
    if mounted:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def no_ray(monkeypatch):
    """Tripwire: validation must fail before any cluster starts."""
    def refuse(*a, **k):
        raise AssertionError("Ray was started before the input was validated")

    monkeypatch.setattr("selfdebug.ray_utils.init_ray", refuse)


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = cli.main(list(argv))
    err = capsys.readouterr().err
    return code, err


def assert_two_lines(err: str) -> None:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert 1 <= len(lines) <= 2 and "Traceback" not in err, err


# ------------------------------------------------------------------ the convention
def test_exit_codes_documented_in_readme():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Errors and exit codes", 1)[1].split("\n## ", 1)[0]
    for code in (errors.EXIT_OK, errors.EXIT_INCOMPLETE, errors.EXIT_BAD_INPUT,
                 errors.EXIT_WRITE_FAILED, errors.EXIT_CLUSTER, errors.EXIT_BUG,
                 errors.EXIT_INTERRUPTED):
        assert f"| {code} |" in section


def test_bug_prints_traceback_with_log_path(capsys, tmp_path):
    errors.note_log("test", tmp_path)

    def buggy(argv):
        return {}["missing"]

    assert errors.run_command("selfdebug x", buggy, []) == errors.EXIT_BUG
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and f"test: {tmp_path}" in err


def test_disk_full_inside_a_ray_task_is_an_expected_failure(capsys):
    """An OSError raised in a Ray task reaches the driver wrapped (real Ray classes)."""
    from ray.exceptions import RayTaskError

    cause = OSError(errno.ENOSPC, "No space left on device", "/data/out/x.parquet")
    wrapped = RayTaskError("Ledger.add_debug", "tb", cause).as_instanceof_cause()
    code = errors.run_command("selfdebug synth", lambda a: (_ for _ in ()).throw(wrapped), [])
    err = capsys.readouterr().err
    assert code == errors.EXIT_WRITE_FAILED
    assert "disk full: could not write /data/out/x.parquet" in err and "re-run" in err
    assert_two_lines(err)


def test_bad_config_is_two_lines(capsys, no_ray):
    code, err = run_cli(capsys, "sft", "--config", str(CONFIGS / "sft-cpu.yaml"), "epochs=x")
    assert code == 2 and "epochs" in err
    assert_two_lines(err)


# ------------------------------------------------------------------ output paths
def test_synth_out_dir_is_a_file(capsys, tmp_path, no_ray):
    out = tmp_path / "out"
    out.write_text("keep me")
    code, err = run_cli(capsys, "synth", "--config", str(CONFIGS / "synth-cpu.yaml"),
                        f"out_dir={out}")
    assert code == 2 and f"out_dir {out} is a file, not a directory" in err
    assert_two_lines(err)
    assert out.read_text() == "keep me"


@pytest.mark.parametrize("command,config,key", [
    ("synth", "synth-cpu.yaml", "out_dir"), ("eval", "eval-cpu.yaml", "out_dir"),
    ("sft", "sft-cpu.yaml", "out_dir"), ("sft", "sft-cpu.yaml", "storage_path")])
def test_output_parent_is_a_file(capsys, tmp_path, no_ray, command, config, key):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    code, err = run_cli(capsys, command, "--config", str(CONFIGS / config),
                        f"{key}={blocker}/sub/dir")
    assert code == 2 and f"{blocker} is a file, not a directory" in err and key in err
    assert_two_lines(err)


# ------------------------------------------------------------------ bad data
def test_sft_data_dir_missing_before_ray(capsys, tmp_path, no_ray):
    missing = tmp_path / "no-such-synth"
    code, err = run_cli(capsys, "sft", "--config", str(CONFIGS / "sft-cpu.yaml"),
                        f"data_dirs=[{missing}]", f"storage_path={tmp_path}/runs")
    assert code == 2 and f"synthesis output {missing} is not a directory: it does not exist" in err
    assert_two_lines(err)
    not_synth = tmp_path / "empty"
    not_synth.mkdir()
    code, err = run_cli(capsys, "sft", "--config", str(CONFIGS / "sft-cpu.yaml"),
                        f"data_dirs=[{not_synth}]", f"storage_path={tmp_path}/runs")
    assert code == 2 and f"{not_synth} is not a synthesis output" in err


def _synth_output(root: Path, shards: int = 2, code_bytes: int = 64) -> None:
    """A real synthesis output written by the shard writer (rows made up, not generated)."""
    from selfdebug.synth import shards as S

    manifest = S.read_manifest(root)
    for s in range(shards):
        rows = [{"task_id": f"T/{s}", "source": "mbpp", "sample_index": 0, "status": "passed",
                 "code": os.urandom(code_bytes).hex(), "passed": 1, "total": 1}]
        files = S.write_shard(root, s, rows, [])
        manifest["shards"][str(s)] = {"task_ids": [f"T/{s}"], "files": files, "stats": {}}
    S.write_manifest(root, manifest)


def test_corrupt_manifest_names_the_file(capsys, tmp_path, shared_data, no_ray):
    from selfdebug.dataset import read_samples

    out = tmp_path / "synth"
    _synth_output(out)
    assert len(read_samples([str(out)])) == 2
    manifest = out / "manifest.json"
    manifest.write_text(manifest.read_text()[:40])  # damaged
    before = manifest.read_bytes()
    shards = sorted(out.rglob("*.parquet"))
    assert len(shards) == 4  # samples/ + debug/ of each shard
    code, err = run_cli(capsys, "synth", "--config", str(CONFIGS / "synth-cpu.yaml"),
                        f"out_dir={out}", f"source={shared_data / 'mbpp.jsonl'}")
    assert code == 2 and f"{manifest} is not a valid manifest" in err and "fix:" in err
    assert_two_lines(err)
    code, err = run_cli(capsys, "sft", "--config", str(CONFIGS / "sft-cpu.yaml"),
                        f"data_dirs=[{out}]", f"storage_path={tmp_path}/runs")
    assert code == 2 and "manifest.json is not a valid manifest" in err
    # nothing was rewritten or removed
    assert manifest.read_bytes() == before and sorted(out.rglob("*.parquet")) == shards


def test_non_utf8_problems_file_names_file_and_line(capsys, tmp_path, shared_data, no_ray):
    from selfdebug.problems import FormatError, load_problems

    lines = (shared_data / "mbpp.jsonl").read_bytes().splitlines(keepends=True)[:3]
    bad = tmp_path / "mbpp.jsonl"
    bad.write_bytes(lines[0] + lines[1].replace(b'"', b'"\xff', 1) + lines[2])
    with pytest.raises(FormatError, match=rf"{bad}, line 2: not UTF-8"):
        load_problems(bad)
    code, err = run_cli(capsys, "synth", "--config", str(CONFIGS / "synth-cpu.yaml"),
                        f"source={bad}", "split=", f"out_dir={tmp_path}/out")
    assert code == 2 and f"{bad}, line 2: not UTF-8" in err
    assert_two_lines(err)


# ------------------------------------------------------------------ append-only logs
def test_torn_metrics_line_is_skipped_on_resume(tmp_path):
    pytest.importorskip("torch.utils.tensorboard")
    from selfdebug.errors import InputError
    from selfdebug.train.metrics import METRICS_FILE, MetricsLog, read_metrics

    log = MetricsLog(tmp_path)
    for step in (1, 2, 3):
        log.log(step, "train", {"loss": 1.0 / step})
    log.close()
    path = tmp_path / METRICS_FILE
    with path.open("a") as f:  # a crash mid-append
        f.write('{"step": 4, "split": "tr')
    assert [r["step"] for r in read_metrics(tmp_path)] == [1, 2, 3]
    resumed = MetricsLog(tmp_path, resume_step=2)  # the checkpoint was at step 2
    resumed.log(3, "train", {"loss": 0.3})
    resumed.close()
    assert [(r["step"], r["loss"]) for r in read_metrics(tmp_path)] == [
        (1, 1.0), (2, 0.5), (3, 0.3)]
    # damage that is not a torn last line is named, not silently dropped
    path.write_text('{"step": 1, "loss": 1}\nnot json\n{"step": 2, "loss": 2}\n')
    with pytest.raises(InputError, match=rf"{path}, line 2: not a record of this log"):
        read_metrics(tmp_path)


def test_sft_report_counts_restarts(tmp_path):
    """Each start of the training loop is logged (append-only, torn line tolerated); the
    report counts the restarts and where each resumed."""
    pytest.importorskip("matplotlib")
    from selfdebug.train.metrics import ATTEMPTS_FILE, MetricsLog, log_attempt
    from selfdebug.train.report import write_sft_report

    log = MetricsLog(tmp_path)
    log.log(1, "train", {"loss": 2.0})
    log.log(2, "train", {"loss": 1.0})
    log.close()
    for resumed_at in (0, 2, 4):
        log_attempt(tmp_path, resumed_at)
    with (tmp_path / ATTEMPTS_FILE).open("a") as f:
        f.write('{"resumed_')  # a crash mid-append
    data = write_sft_report(tmp_path, {"name": "t"}, {})
    assert data["summary"]["restarts"] == 2 and data["summary"]["resumed_at_steps"] == [2, 4]
    assert "- restarts: 2 (resumed at steps [2, 4]" in (tmp_path / "sft_report.md").read_text()


# ------------------------------------------------------------------ disk full
def _ledger_rows(task: str) -> list[dict]:
    return [{"task_id": task, "source": "mbpp", "sample_index": 0, "status": "passed",
             "code": os.urandom(2048).hex(), "passed": 1, "total": 1}]


def _commit_task(ledger, task: str) -> None:
    ledger.group(_ledger_rows(task))
    ledger.add_samples(_ledger_rows(task))


def test_synth_disk_full_keeps_committed_shards_and_resumes(capsys, small_disk, shared_data,
                                                            monkeypatch, no_ray):
    """The real ledger and shard writer on a full disk; generation and judging are replaced
    by made-up passing samples (the pipeline itself needs vLLM: test_synth_pipeline)."""
    from selfdebug.dataset import read_samples
    from selfdebug.synth import pipeline
    from selfdebug.synth.ledger import Ledger

    out = small_disk.path / "synth"
    calls = []

    def fake_run_pipeline(cfg):
        _, plan = pipeline.load_plan(cfg)
        ledger = Ledger(str(out), plan, 1, 1, cfg.fingerprint())
        for shard in sorted(ledger.open):
            calls.append(shard)
            for task in plan[shard]:
                _commit_task(ledger, task)
            if calls == [0]:
                small_disk.fill()  # the disk fills up after the first shard
        return {"shards": len(plan), "committed": ledger.committed, "incomplete": [],
                "stages": [], "wall_s": 1.0}

    monkeypatch.setattr(pipeline, "run_pipeline", fake_run_pipeline)
    argv = ["synth", "--config", str(CONFIGS / "synth-cpu.yaml"), f"out_dir={out}",
            f"source={shared_data / 'mbpp.jsonl'}", "limit=4", "shard_size=2"]
    code, err = run_cli(capsys, *argv)
    assert code == errors.EXIT_WRITE_FAILED, err
    assert f"disk full: could not write {out}/samples/shard-00001.parquet" in err
    assert f"1 of 2 shards are complete in {out}" in err
    assert_two_lines(err)
    first = read_samples([str(out)])
    assert len(first) == 2 and not list(out.rglob(".*.tmp"))  # shard 0 intact, no debris
    small_disk.free()
    calls.clear()
    code, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert calls == [1]  # only the shard that was lost is redone
    again = read_samples([str(out)])
    assert len(again) == 4 and again[:2] == first


@pytest.mark.ray
def test_disk_full_in_the_ledger_actor(ray_cluster, small_disk):
    """The same through a real Ray actor: the driver gets a RayTaskError wrapping ENOSPC."""
    if small_disk.kind == "fake":
        pytest.skip("the fake filesystem layer cannot reach a Ray worker process")
    import ray

    from selfdebug.dataset import read_samples
    from selfdebug.synth.ledger import start_ledger

    out = small_disk.path / "synth"
    plan = {0: ["T/0"], 1: ["T/1"]}
    ledger = start_ledger(str(out), plan, 1, 1, "fp")
    try:
        ray.get(ledger.group.remote(_ledger_rows("T/0")))
        ray.get(ledger.add_samples.remote(_ledger_rows("T/0")))
        small_disk.fill()
        ray.get(ledger.group.remote(_ledger_rows("T/1")))
        with pytest.raises(Exception) as info:
            ray.get(ledger.add_samples.remote(_ledger_rows("T/1")))
    finally:
        ray.kill(ledger)
    message, code, fix = errors.describe(info.value)
    assert code == errors.EXIT_WRITE_FAILED and message.startswith("disk full")
    assert [r["task_id"] for r in read_samples([str(out)])] == ["T/0"]


def test_sft_model_export_keeps_previous_model_on_full_disk(tmp_path, small_disk):
    from selfdebug.train.cli import export_model

    ckpt = tmp_path / "ckpt" / "model"
    ckpt.mkdir(parents=True)
    (ckpt / "model.safetensors").write_bytes(os.urandom(64 * 1024))
    out = small_disk.path / "model"
    export_model(ckpt, out)
    before = (out / "model.safetensors").read_bytes()
    (ckpt / "model.safetensors").write_bytes(os.urandom(64 * 1024))
    small_disk.fill()
    if small_disk.kind == "fake":
        pytest.skip("copytree does not fsync: the fake layer cannot fail it")
    with pytest.raises(errors.OutputError, match=rf"could not write the final model to {out}"):
        export_model(ckpt, out)
    assert (out / "model.safetensors").read_bytes() == before
    assert [p.name for p in small_disk.path.iterdir() if p.name != "filler"] == ["model"]


# ------------------------------------------------------------------ cluster start-up
def test_long_tmpdir_gets_a_short_ray_session_dir(tmp_path, monkeypatch, capsys):
    import tempfile

    from selfdebug.ray_utils import RAY_SOCKET_SUFFIX, SOCKET_PATH_MAX, ray_temp_dir

    long = tmp_path / ("t" * 90)
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    d = ray_temp_dir()
    assert d.startswith("/tmp/sdray-") and len(d) + RAY_SOCKET_SUFFIX <= SOCKET_PATH_MAX
    assert "TMPDIR" in capsys.readouterr().err
    os.rmdir(d)


@pytest.mark.ray
def test_long_tmpdir_ray_really_starts(tmp_path):
    long = tmp_path / ("t" * 90)
    long.mkdir()
    script = ("import ray; from selfdebug.ray_utils import init_ray, shutdown_ray; "
              "init_ray(num_cpus=1); print('UP', ray.is_initialized()); shutdown_ray()")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "TMPDIR": str(long),
                                            "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0 and "UP True" in proc.stdout, proc.stderr[-3000:]
    assert "too long for Ray's socket paths" in proc.stderr


def test_ray_init_timeout_is_a_cluster_error(monkeypatch, capsys):
    """Mock: ray.init raises the TimeoutError Ray raises when a node does not come up under
    load (reproducing real load here would take minutes)."""
    import ray

    def slow_init(*a, **k):
        raise TimeoutError("Timed out after 60 seconds while waiting for node to startup. "
                           "Did not find socket name /tmp/x in the list.")

    monkeypatch.setattr(ray, "is_initialized", lambda: False)
    monkeypatch.setattr(ray, "init", slow_init)
    from selfdebug.ray_utils import init_ray

    code = errors.run_command("selfdebug synth", lambda a: init_ray(num_cpus=1), [])
    err = capsys.readouterr().err
    assert code == errors.EXIT_CLUSTER
    assert "could not start a local Ray cluster (TimeoutError: Timed out after 60" in err
    assert "Ray's logs: /tmp/sdray-" in err and "re-run" in err
    assert_two_lines(err)


# ------------------------------------------------------------------ what was retried
def test_synth_report_counts_retried_rows_and_skips(tmp_path):
    """A row that arrives twice (Ray retried the task that produced it) is stored once and
    counted in the manifest and the report."""
    from selfdebug.dataset import read_samples
    from selfdebug.synth.ledger import Ledger
    from selfdebug.synth.report import build_report

    ledger = Ledger(str(tmp_path), {0: ["T/0"], 1: ["T/1"]}, 1, 1, "fp")
    rows = _ledger_rows("T/0")
    ledger.group(rows)
    ledger.group(rows)  # the sampling task was retried
    ledger.add_samples(rows)
    assert ledger.progress() == {"committed": [0], "open": [1], "problems_done": 1,
                                 "repeated_rows": 1}
    assert len(read_samples([str(tmp_path)])) == 1
    data, md = build_report({"name": "t"}, 0, tmp_path, {"shards": 2, "committed": [0],
                                                         "incomplete": [1], "wall_s": 1.0})
    faults = data["this_run"]["retried_and_skipped"]
    assert faults["repeated_rows"] == 1 and faults["incomplete_shards"] == [1]
    assert "retried: 1 rows arrived more than once" in md
    assert "shards [1] incomplete" in md
