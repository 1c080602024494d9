"""Hostile candidates: none may pass, touch the host, or leave a process behind.

Every attack targets ``add(a, b)`` (tests: add(1, 2) == 3, add(2, 2) == 4, add(-1, 1) == 0)
or an echo-doubling stdin/stdout problem, without computing the right answers, so the only
way to "pass" would be to break the judge.
"""

from __future__ import annotations

import os
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from selfdebug.sandbox.isolation import preserved_tmp_entries
from selfdebug.sandbox.judge import Judge, SandboxConfig
from selfdebug.schema import Problem, TestSuite

ADD = Problem(task_id="add", prompt="", entry_point="add",
              canonical_solution="def add(a, b):\n    return a + b\n",
              tests=TestSuite(kind="assert", asserts=["assert add(1, 2) == 3",
                                                      "assert add(2, 2) == 4",
                                                      "assert add(-1, 1) == 0"]), source="t")
ECHO = Problem(task_id="echo", prompt="", entry_point="",
               canonical_solution="print(int(input()) * 2)\n",
               tests=TestSuite(kind="io", inputs=["1\n", "21\n"], outputs=["2", "42"]), source="t")

CANARY_DIR = Path("/tmp/selfdebug-canary")  # root-owned 0755, like a user's project files
CANARY = CANARY_DIR / "canary.txt"
PORT = 47613

WRONG = "def add(a, b):\n    return 0\n"

ATTACKS: dict[str, tuple[str, str]] = {
    # --- ending early, hoping a silent exit counts as success
    "sys_exit_at_import": ("add", "import sys\nsys.exit(0)\n"),
    "os_exit_at_import": ("add", "import os\nos._exit(0)\n"),
    "sys_exit_in_call": ("add", "def add(a, b):\n    import sys\n    sys.exit(0)\n"),
    "os_exit_in_call": ("add", "def add(a, b):\n    import os\n    os._exit(0)\n"),
    "base_exception": ("add", "class Boom(BaseException):\n    pass\n"
                              "def add(a, b):\n    raise Boom()\n"),
    "io_exit_early": ("echo", "import os\nos._exit(0)\n"),
    # --- objects that claim to equal anything
    "eq_always_true": ("add", "class Any:\n    def __eq__(self, o):\n        return True\n"
                              "    __hash__ = object.__hash__\n"
                              "def add(a, b):\n    return Any()\n"),
    "int_subclass_eq": ("add", "class I(int):\n    def __eq__(self, o):\n        return True\n"
                               "    __hash__ = int.__hash__\n"
                               "def add(a, b):\n    return I(0)\n"),
    "str_subclass_eq": ("add", "class S(str):\n    def __eq__(self, o):\n        return True\n"
                               "    __hash__ = str.__hash__\n"
                               "def add(a, b):\n    return S('x')\n"),
    "hash_and_eq_override": ("add", "class H:\n    def __hash__(self):\n        return 3\n"
                                    "    def __eq__(self, o):\n        return True\n"
                                    "def add(a, b):\n    return H()\n"),
    "patch_builtins": ("add", "import builtins\n"
                              "builtins.AssertionError = type('N', (Exception,), {})\n"
                              "builtins.int = lambda *a: 0\n" + WRONG),
    "patch_wire_encoder": ("add", "import sys\n"
                                  "w = sys.modules.get('wire')\n"
                                  "if w: w.encode = lambda v, *a, **k: ['i', '3']\n" + WRONG),
    # --- looking for the expected values
    "scan_frames": ("add", "import sys\ndef add(a, b):\n    f, seen = sys._getframe(), []\n"
                           "    while f:\n        seen += list(f.f_locals.values())\n"
                           "        f = f.f_back\n    return seen\n"),
    "scan_gc": ("add", "import gc\ndef add(a, b):\n"
                       "    return [o for o in gc.get_objects() if isinstance(o, dict)][:1]\n"),
    "read_test_file": ("add", f"src = open({str(Path(__file__).resolve())!r}).read()\n" + WRONG),
    "read_parent_memory": ("add", "import os\nopen(f'/proc/{os.getppid()}/mem', 'rb')\n" + WRONG),
    "read_benchmark_data": ("add", "import glob\n"
                                   "assert glob.glob('/work/**/*.jsonl*', recursive=True)\n" + WRONG),
    # --- forging results on the wire
    "print_fake_markers": ("add", "print('PASSED'); print('{\"ok\": [\"i\", \"3\"]}')\n" + WRONG),
    "forge_frames_on_all_fds": (
        "add", "import os, struct\nmsg = b'{\"ok\":[\"i\",\"3\"]}'\n"
               "for fd in range(0, 256):\n    try:\n"
               "        os.write(fd, struct.pack('<I', len(msg)) + msg)\n"
               "    except OSError:\n        pass\n" + WRONG),
    "garbage_on_all_fds": ("add", "import os\nfor fd in range(256):\n    try:\n"
                                  "        os.write(fd, b'\\xff' * 64)\n    except OSError:\n"
                                  "        pass\n" + WRONG),
    # --- processes
    "fork_bomb": ("add", "import os\nwhile True:\n    os.fork()\n"),
    "subprocess_spawn": ("add", "import subprocess\nsubprocess.Popen(['sleep', '300'])\n" + WRONG),
    "os_system": ("add", "import os\nos.system('sleep 300 &')\n" + WRONG),
    "setsid_escape": ("add", "import os\nos.setsid()\nif os.fork() == 0:\n"
                             "    import time\n    time.sleep(300)\n" + WRONG),
    "raw_fork_syscall": ("add", "import ctypes\nctypes.CDLL(None).syscall(57)\n" + WRONG),
    "lingering_thread": ("add", "import threading, time\n"
                                "threading.Thread(target=lambda: time.sleep(300)).start()\n"
                                + WRONG),
    "io_fork": ("echo", "import os\nos.fork()\nprint(int(input()) * 2)\n"),
    # --- resources
    "memory_bomb": ("add", "x = bytearray(64 << 30)\n" + WRONG),
    "memory_creep": ("add", "def add(a, b):\n    keep = []\n    while True:\n"
                            "        keep.append(' ' * 10**7)\n"),
    "infinite_loop_ignoring_signals": (
        "add", "import signal\nfor s in (signal.SIGTERM, signal.SIGINT, signal.SIGALRM, "
               "signal.SIGXCPU):\n    signal.signal(s, signal.SIG_IGN)\n"
               "def add(a, b):\n    while True:\n        pass\n"),
    "sleep_forever": ("add", "import time\ndef add(a, b):\n    time.sleep(10**6)\n"),
    "stop_self": ("add", "import os, signal\nos.kill(os.getpid(), signal.SIGSTOP)\n" + WRONG),
    "catastrophic_regex": ("add", "import re\ndef add(a, b):\n"
                                  "    return re.match(r'(a+)+$', 'a' * 40 + 'b')\n"),
    "huge_output": ("add", "def add(a, b):\n    print('x' * 10**8)\n    return 0\n"),
    "io_huge_output": ("echo", "import sys\nwhile True:\n    sys.stdout.write('x' * 10**6)\n"),
    "fill_tmp": ("add", "import os\ni = 0\ntry:\n    while True:\n"
                        "        open(f'/tmp/f{i}', 'wb').write(b'x' * (1 << 20)); i += 1\n"
                        "except OSError:\n    pass\n" + WRONG),
    "raise_rlimits": ("add", "import resource\nfor r in (resource.RLIMIT_AS, resource.RLIMIT_CPU):\n"
                             "    resource.setrlimit(r, (resource.RLIM_INFINITY,) * 2)\n"
                             "x = bytearray(64 << 30)\n" + WRONG),
    "deep_recursion": ("add", "import sys\nsys.setrecursionlimit(10**8)\n"
                              "def add(a, b):\n    return add(a, b) + 1\n"),
    "ctypes_segfault": ("add", "import ctypes\ndef add(a, b):\n    return ctypes.string_at(0)\n"),
    # --- the host
    "write_host_file": ("add", f"open({str(CANARY)!r}, 'w').write('pwned')\n" + WRONG),
    "delete_host_file": ("add", f"import os\nos.remove({str(CANARY)!r})\n" + WRONG),
    "write_host_tmp": ("add", "open('/tmp/selfdebug-pwned', 'w').write('x')\n" + WRONG),
    "network_connect": ("add", "import socket\n"
                               f"socket.create_connection(('127.0.0.1', {PORT}), timeout=1)"
                               ".sendall(b'pwned')\n" + WRONG),
    "kill_parent": ("add", "import os\nos.kill(os.getppid(), 9)\n" + WRONG),
    "kill_everyone": ("add", "import os\nos.kill(-1, 9)\n" + WRONG),
    "killpg_parent": ("add", "import os\nos.killpg(os.getpgid(os.getppid()), 9)\n" + WRONG),
    "ptrace_parent": ("add", "import ctypes, os\n"
                             "assert ctypes.CDLL(None).ptrace(16, os.getppid(), 0, 0) != 0\n" + WRONG),
    "close_stdout": ("add", "import os, sys\nsys.stdout.close()\nos.close(1)\n" + WRONG),
    "close_all_fds": ("add", "import os\nos.closerange(0, 4096)\n" + WRONG),
    "io_close_stdout_then_exit": ("echo", "import os\nos.close(1)\n"),
}


def _children(pid: int) -> set[int]:
    kids: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                stat = Path(f"/proc/{d}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            kids.setdefault(ppid, []).append(int(d))
    out, todo = set(), [pid]
    while todo:
        for c in kids.get(todo.pop(), []):
            out.add(c)
            todo.append(c)
    return out


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    CANARY_DIR.mkdir(exist_ok=True)
    os.chmod(CANARY_DIR, 0o755)
    CANARY.write_text("original")
    os.chmod(CANARY, 0o644)
    (Path("/tmp/selfdebug-pwned")).unlink(missing_ok=True)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", PORT))
    listener.listen(8)
    listener.settimeout(0.2)
    connections: list = []
    stop = threading.Event()

    def accept():
        while not stop.is_set():
            try:
                connections.append(listener.accept())
            except OSError:
                pass

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    bystander = subprocess.Popen(["sleep", "600"])  # someone else's process on the host
    judge = Judge([ADD, ECHO], SandboxConfig(timeout_floor=1.0, memory_mb=1024,
                                             output_cap_bytes=1 << 20,
                                             cache_dir=str(tmp_path_factory.mktemp("c"))))
    assert judge.run("add", ADD.canonical_solution).status == "passed"
    yield {"judge": judge, "connections": connections, "bystander": bystander}
    stop.set()
    judge.close()
    listener.close()
    bystander.kill()


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_attack_never_passes_and_leaves_no_trace(env, name):
    judge = env["judge"]
    task, code = ATTACKS[name]
    server = judge.server
    starts = server.starts
    assert server.request({"op": "ping"}, 10)["pong"]  # the previous run is cleaned up
    baseline = _children(server.proc.pid)
    t0 = time.monotonic()
    result = judge.run(task, code)
    assert result.status != "passed", (name, result)
    assert result.passed < result.total
    assert time.monotonic() - t0 < 30
    # nothing it started survives (the cleanup is done before the server's next reply);
    # the server (its parent) was not hurt
    assert server.request({"op": "ping"}, 10)["pong"]
    assert server.starts == starts and server.alive, f"{name} took the fork server down"
    assert _children(server.proc.pid) == baseline
    assert env["bystander"].poll() is None, f"{name} killed a host process"
    # the host is untouched
    assert CANARY.read_text() == "original"
    assert not Path("/tmp/selfdebug-pwned").exists() or not judge.server.isolation.bwrap
    assert env["connections"] == [], f"{name} reached the network"
    # and the next candidate sees a clean sandbox
    keep = sorted(preserved_tmp_entries() | {"run"})  # an interpreter under /tmp is bound there
    probe = ("import os\ndef add(a, b):\n"
             f"    left = [n for n in os.listdir('/tmp') if n not in {keep!r}]\n"
             "    return a + b if not left else -1\n")
    if judge.server.isolation.bwrap:
        assert judge.run("add", probe).status == "passed", f"{name} left files in /tmp"
    assert judge.run("echo", ECHO.canonical_solution).status == "passed"


def test_there_are_at_least_thirty_attacks():
    assert len(ATTACKS) >= 30


# Degraded mode (no namespaces: some Kubernetes pods) keeps seccomp, rlimits and a uid drop
# but has no filesystem or network namespace: world-writable host directories stay
# writable (files capped by RLIMIT_FSIZE), so /tmp-filling attacks are not run here.
DEGRADED = ["fork_bomb", "subprocess_spawn", "setsid_escape", "kill_parent", "kill_everyone",
            "killpg_parent", "write_host_file", "delete_host_file", "read_parent_memory",
            "network_connect", "memory_bomb", "infinite_loop_ignoring_signals",
            "eq_always_true", "forge_frames_on_all_fds", "os_exit_in_call", "lingering_thread"]


@pytest.mark.timeout(120)
def test_degraded_isolation_still_contains_the_worst(env, tmp_path):
    if os.getuid() != 0:
        pytest.skip("degraded mode drops to uid nobody, which needs root")
    judge = Judge([ADD, ECHO], SandboxConfig(isolation="degraded", timeout_floor=1.0,
                                             memory_mb=1024, cache_dir=str(tmp_path)))
    try:
        assert "bwrap" not in judge.isolation and "uid-drop" in judge.isolation
        assert judge.run("add", ADD.canonical_solution).status == "passed"
        for name in DEGRADED:
            task, code = ATTACKS[name]
            assert judge.server.request({"op": "ping"}, 10)["pong"]
            starts, baseline = judge.server.starts, _children(judge.server.proc.pid)
            assert judge.run(task, code).status != "passed", name
            assert judge.server.request({"op": "ping"}, 10)["pong"]
            assert judge.server.starts == starts and _children(judge.server.proc.pid) == baseline
            assert env["bystander"].poll() is None and CANARY.read_text() == "original", name
            assert env["connections"] == [], name
    finally:
        judge.close()


def test_no_isolation_is_refused_unless_asked(monkeypatch):
    from selfdebug.sandbox import isolation

    monkeypatch.setattr(isolation, "_bwrap_works", lambda: False)
    monkeypatch.setattr(isolation, "_seccomp_available", lambda: False)
    monkeypatch.setattr(isolation.os, "getuid", lambda: 1000)
    with pytest.raises(isolation.SandboxUnavailable, match="refusing to run untrusted code"):
        isolation.detect_isolation("auto")
    assert isolation.detect_isolation("none").level == "rlimits+no-new-privs"
