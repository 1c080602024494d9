"""A real Ray head on 127.0.0.1 for `ray job submit` tests: own temp dir, own ports.

Started with ``ray start --head --block`` as a child in its own session, so stopping it
(terminate, then kill of that process group) ends exactly the Ray processes it started —
never ``ray stop``, which ends every Ray process of the user on the machine.
The venv's bin directory leads PATH so a job's ``python`` is this environment's; token
authentication is off for this head (loopback only), set explicitly.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@dataclass
class Head:
    address: str  # dashboard / job server, for `ray job submit --address`
    gcs: str  # for ray.init(address=...)
    env: dict  # environment for ray CLI calls against this head
    temp_dir: str
    proc: subprocess.Popen

    def ray(self, *args: str, timeout: float = 120, cwd: str | None = None):
        return subprocess.run([str(BIN / "ray"), *args], env=self.env, cwd=cwd, text=True,
                              capture_output=True, timeout=timeout)

    def submit(self, entrypoint: list[str], *, cwd: str, runtime_env: str | None = None,
               submission_id: str | None = None) -> str:
        args = ["job", "submit", "--no-wait", "--address", self.address, "--working-dir", "."]
        if runtime_env:
            args += ["--runtime-env", runtime_env]
        if submission_id:
            args += ["--submission-id", submission_id]
        r = self.ray(*args, "--", *entrypoint, cwd=cwd)
        if r.returncode != 0:
            raise RuntimeError(f"ray job submit failed:\n{r.stdout}\n{r.stderr}")
        for word in (r.stdout + r.stderr).split():
            if word.strip("'\"").startswith("raysubmit_") or (
                    submission_id and submission_id in word):
                return submission_id or word.strip("'\"")
        raise RuntimeError(f"no job id in ray job submit's output:\n{r.stdout}\n{r.stderr}")

    def job(self, job_id: str) -> dict:
        with urllib.request.urlopen(f"{self.address}/api/jobs/{job_id}", timeout=10) as resp:
            return json.loads(resp.read())

    def logs(self, job_id: str) -> str:
        with urllib.request.urlopen(f"{self.address}/api/jobs/{job_id}/logs",
                                    timeout=30) as resp:
            return json.loads(resp.read()).get("logs", "")

    def wait(self, job_id: str, timeout: float, until=("SUCCEEDED", "FAILED", "STOPPED"),
             poll: float = 2.0) -> dict:
        """Poll until the job reaches a status in ``until``; raise naming the last status."""
        deadline = time.monotonic() + timeout
        info = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("status") in until:
                return info
            time.sleep(poll)
        raise TimeoutError(f"job {job_id} still {info.get('status')!r} after {timeout:.0f} s "
                           f"(waited for {until}); logs:\n{self.logs(job_id)[-4000:]}")

    def _state_rows(self, kind: str, **eq: str) -> list[dict]:
        """Rows of Ray's state API (``/api/v0/<kind>``) whose columns equal ``eq``."""
        query = urllib.parse.urlencode(
            [(k, v) for key, value in eq.items() for k, v in
             (("filter_keys", key), ("filter_predicates", "="), ("filter_values", value))]
            + [("limit", "1000"), ("detail", "true")])
        with urllib.request.urlopen(f"{self.address}/api/v0/{kind}?{query}",
                                    timeout=30) as resp:
            return json.loads(resp.read())["data"]["result"]["result"]

    def held_by(self, job_id: str) -> list[str]:
        """What the job (its Ray job id, ``job(...)["job_id"]``) still holds: live actors
        that reserve CPUs/GPUs (``CPU``, or ``CPU_group_…`` inside a placement group),
        placement groups not removed. Zero-resource actors (Ray Data's detached stats
        actor) hold nothing another job could wait for."""
        held = [f"actor {a.get('class_name')} ({a.get('required_resources')})"
                for a in self._state_rows("actors", job_id=job_id, state="ALIVE")
                if any(v for k, v in (a.get("required_resources") or {}).items()
                       if k.split("_")[0] in ("CPU", "GPU"))]
        held += [f"placement group {g.get('placement_group_id')} ({g.get('state')})"
                 for g in self._state_rows("placement_groups", creator_job_id=job_id)
                 if g.get("state") != "REMOVED"]
        return held

    def stop_job(self, job_id: str) -> None:
        """Stop (kill) the job's driver now: the job server's API, not the CLI, whose own
        start-up takes seconds on a busy machine."""
        req = urllib.request.Request(f"{self.address}/api/jobs/{job_id}/stop", method="POST")
        with urllib.request.urlopen(req, timeout=30) as resp:
            resp.read()


@contextmanager
def local_head(num_cpus: int = 2, *, env: dict | None = None, ready_timeout: float = 90):
    # The worker port range must not hold any of the named ports (Ray refuses to start:
    # "worker_ports is trying to use a port number ... used by other components").
    while True:
        gcs, dash, client, agent, metrics, rt_agent, lo = _free_ports(7)
        if not any(lo < p <= lo + 400 for p in (gcs, dash, client, agent, metrics, rt_agent)):
            break
    temp = tempfile.mkdtemp(prefix="selfdebug-head-")
    env = {**os.environ, **(env or {}), "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
           "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_ADDRESS": f"http://127.0.0.1:{dash}",
           # Explicit: Ray 2.60 turns token auth on whenever ~/.ray/auth_token exists, a
           # file any other Ray user of this machine may create or delete meanwhile.
           "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_JOB_ID", None)
    cmd = [str(BIN / "ray"), "start", "--head", "--block", f"--num-cpus={num_cpus}",
           "--num-gpus=0", "--node-ip-address=127.0.0.1", f"--port={gcs}",
           "--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dash}",
           f"--ray-client-server-port={client}", f"--dashboard-agent-listen-port={agent}",
           f"--metrics-export-port={metrics}", f"--runtime-env-agent-port={rt_agent}",
           f"--min-worker-port={lo + 1}", f"--max-worker-port={lo + 400}",
           f"--temp-dir={temp}", "--disable-usage-stats"]
    log = open(Path(temp) / "head.log", "w")  # noqa: SIM115  closed below
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    head = Head(f"http://127.0.0.1:{dash}", f"127.0.0.1:{gcs}", env, temp, proc)
    # A SIGTERM (pytest under `timeout`) must still stop the head: run the finally below.
    old_term = signal.signal(signal.SIGTERM, _exit_on_term) \
        if threading.current_thread() is threading.main_thread() else None
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ray head exited ({proc.returncode}):\n"
                                   f"{(Path(temp) / 'head.log').read_text()[-3000:]}")
            try:
                urllib.request.urlopen(f"{head.address}/api/version", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"ray head's job server {head.address} not up after "
                                       f"{ready_timeout:.0f} s") from None
                time.sleep(1)
        yield head
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=45)
        except subprocess.TimeoutExpired:
            pass
        try:  # whatever the head started and left behind (its own session only)
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
        log.close()
        shutil.rmtree(temp, ignore_errors=True)
        if old_term is not None:
            signal.signal(signal.SIGTERM, old_term)


def _exit_on_term(signum, frame):
    raise SystemExit(128 + signum)
