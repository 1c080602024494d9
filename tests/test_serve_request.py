"""/v1/debug request validation and the debug rounds, without Ray: `parse_request` on good
and bad bodies, and `DebugSession` against a real local sandbox pool (fork servers) with a
scripted stand-in for the model."""

from __future__ import annotations

import asyncio
import json

import pytest

from selfdebug.serve.config import DebugLimits, ServeConfig
from selfdebug.serve.request import BadRequest, decode_body, parse_request

LIMITS = DebugLimits(max_code_chars=200, max_rounds=4, max_tests=3, max_test_chars=60)
GOOD = {"problem": "Add two numbers.", "code": "def add(a, b):\n    return a - b",
        "tests": ["assert add(1, 2) == 3"]}


def _bad(body: dict) -> BadRequest:
    with pytest.raises(BadRequest) as e:
        parse_request(body, LIMITS)
    return e.value


def test_parse_forms_of_tests():
    r = parse_request(GOOD, LIMITS)
    assert (r.tests.kind, r.entry_point, r.mode, r.max_rounds) == ("assert", "add",
                                                                   "explain_refine", 3)
    io = parse_request({**GOOD, "tests": {"io": [{"input": "1 2\n", "output": "3\n"}]}}, LIMITS)
    assert (io.tests.kind, io.tests.inputs, io.tests.outputs) == ("io", ["1 2\n"], ["3\n"])
    call = parse_request({**GOOD, "tests": {"function": "add", "inputs": [[1, 2]],
                                            "outputs": [3]}, "mode": "refine"}, LIMITS)
    assert (call.tests.kind, call.entry_point, call.tests.outputs) == ("call", "add", [3])
    only_error = parse_request({**GOOD, "tests": None, "error": "TypeError: ..."}, LIMITS)
    assert only_error.tests is None and only_error.to_problem(3.0) is None
    p = r.to_problem(3.0)
    assert p.time_limit == 3.0 and p.task_id.startswith("request/") and p.prompt == GOOD["problem"]


@pytest.mark.parametrize("body,field,status", [
    ({"code": "x"}, "problem", 422),
    ({"problem": "p"}, "code", 422),
    ({**GOOD, "problem": 3}, "problem", 422),
    ({**GOOD, "code": "x" * 201}, "code", 413),
    ({**GOOD, "max_rounds": 0}, "max_rounds", 422),
    ({**GOOD, "max_rounds": 5}, "max_rounds", 422),
    ({**GOOD, "max_rounds": "2"}, "max_rounds", 422),
    ({**GOOD, "mode": "rewrite"}, "mode", 422),
    ({**GOOD, "stream": "yes"}, "stream", 422),
    ({**GOOD, "temperature": 7}, "temperature", 422),
    ({**GOOD, "surprise": 1}, "surprise", 422),
    ({**GOOD, "tests": None}, "tests", 422),
    ({**GOOD, "tests": "assert add(1, 2) == 3"}, "tests", 422),
    ({**GOOD, "tests": []}, "tests.asserts", 422),
    ({**GOOD, "tests": ["assert add(1,2)==3"] * 4}, "tests.asserts", 413),
    ({**GOOD, "tests": [7]}, "tests.asserts[0]", 422),
    ({**GOOD, "tests": ["assert add(1, 2) == 3", "add(1, 2)"]}, "tests.asserts[1]", 422),
    ({**GOOD, "tests": ["assert add(1, 2) =="]}, "tests.asserts[0]", 422),
    ({**GOOD, "tests": {"io": [{"input": "1"}]}}, "tests.io[0]", 422),
    ({**GOOD, "tests": {"function": "add", "inputs": [[1]], "outputs": []}}, "tests.outputs",
     422),
    ({**GOOD, "tests": {"function": "add", "inputs": [1], "outputs": [1]}}, "tests.inputs[0]",
     422),
    ({**GOOD, "tests": {"asserts": ["assert add(1, 2) == 3"], "io": []}}, "tests", 422),
    ({**GOOD, "entry_point": "not a name"}, "entry_point", 422),
])
def test_bad_fields_are_named(body, field, status):
    e = _bad(body)
    assert (e.field, e.status) == (field, status), str(e)
    assert str(e).startswith(field)


@pytest.mark.parametrize("line", [
    "assert __import__('os').system('touch /tmp/x')",
    "assert add(1, 2) == open('/etc/passwd').read()",
    "assert add(1, 2).__class__",
    "assert os.getcwd()",
    "assert (lambda: add(1, 2))() == 3",
    "assert [add(i, i) for i in range(3)]",
    "assert add(1, 2) == 10 ** 10 ** 10",
    "assert add(1, 2) == 'x' * 10000000",
    "assert eval('1') == add(1, 0)",
    "assert add(*[1, 2]) == 3",
])
def test_assert_lines_that_would_run_code_on_the_trusted_side_are_refused(line):
    e = _bad({**GOOD, "tests": [line]})
    assert e.field == "tests.asserts[0]" and e.status == 422


def test_assert_subset_keeps_ordinary_tests():
    lines = ["assert add(1, 2) == 3", "assert not add(0, 0)", "assert abs(add(0.1, 0.2) - 0.3) < 1e-9",
             "assert math.isclose(add(1.0, 2.0), 3.0)", "assert sorted(add([2], [1])) == [1, 2]",
             "assert add('a', 'b')[0] == 'a'", "assert add(1, 2) != 4, 'message'"]
    r = parse_request({**GOOD, "tests": lines}, DebugLimits())
    assert r.tests.asserts == lines and r.entry_point == "add"


def test_decode_body_reasons():
    for raw, words in [(b"\xff\xfe{}", "UTF-8"), (b"{\"problem\": ", "malformed JSON"),
                       (b"[1, 2]", "JSON object")]:
        with pytest.raises(BadRequest) as e:
            decode_body(raw)
        assert e.value.status == 400 and e.value.field == "body" and words in str(e.value)
    assert decode_body(json.dumps(GOOD).encode()) == GOOD


def test_serve_config_validation():
    ServeConfig().validate()
    cfg = ServeConfig()
    cfg.debug.default_rounds = 9
    with pytest.raises(ValueError, match="default_rounds"):
        cfg.validate()


def test_debug_rounds_with_real_sandbox_and_scripted_model():
    """Two rounds: the stand-in model's first fix still fails, the second (asked with the
    first fix's feedback) passes. Verdicts come from real fork servers."""
    from selfdebug.sandbox.pool import SandboxPool
    from selfdebug.serve.debugloop import DebugSession

    pool = SandboxPool({}, workers=1)
    prompts = []

    async def generate(messages, max_tokens, temperature, seed):
        prompts.append(messages)
        fix = "a * 2" if len(prompts) == 1 else "a + b"
        return f"It is wrong.\n```python\ndef add(a, b):\n    return {fix}\n```"

    async def judge(problem, code):
        return pool.judge_row({"problem": problem, "code": code})

    req = parse_request({**GOOD, "tests": ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]},
                        DebugLimits())
    session = DebugSession(req, req.to_problem(3.0), generate, judge, "standin")

    async def run():
        return [e async for e in session.run()]

    try:
        events = asyncio.run(run())
    finally:
        pool.close()
    result = session.result()
    assert [e["event"] for e in events] == ["initial", "round", "round"]
    assert result["verified"] and result["rounds_used"] == 2
    assert result["initial"]["outcomes"] == ["fail", "fail"]
    assert result["rounds"][0]["verdict"]["outcomes"] == ["fail", "pass"]
    assert result["code"].endswith("return a + b") and result["explanation"] == "It is wrong."
    # Round 2 was asked about round 1's code with round 1's feedback (LeDex refines the
    # latest wrong code).
    assert "a * 2" in prompts[1][1]["content"]
    assert result["rounds"][0]["verdict"]["feedback"] in prompts[1][2]["content"]


def test_cli_config_errors_exit_2_before_starting_anything(capsys, tmp_path):
    from selfdebug.serve.cli import main

    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "config file not found" in capsys.readouterr().err
    assert main(["debug.max_rounds=0"]) == 2
    assert "default_rounds" in capsys.readouterr().err
    assert main(["model.autoscaling.min_replicas=3"]) == 2
    assert "model.autoscaling" in capsys.readouterr().err


def test_builder_args_file_overrides_and_inline_keys(tmp_path):
    from pathlib import Path

    from selfdebug.serve.app import load_serve_config

    repo = Path(__file__).resolve().parents[1]
    cfg = load_serve_config({"config": str(repo / "jobs/configs/serve-cpu.yaml"),
                             "overrides": ["port=9001"], "debug": {"max_rounds": 4}})
    assert (cfg.port, cfg.debug.max_rounds, cfg.debug.default_rounds) == (9001, 4, 3)
    assert cfg.model.path == "tiny" and cfg.sandbox.workers_per_actor == 2
    with pytest.raises(ValueError, match="unknown key"):
        load_serve_config({"modle": {}})


def test_guard_api_key_and_body_limit(tmp_path, monkeypatch):
    """The ingress middleware on a plain Starlette app: keys from the env var or a file,
    probes open (under a route prefix too), bodies over the limit refused (chunked too)."""
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from selfdebug.serve.guard import Guard

    async def echo(request):
        return PlainTextResponse(str(len(await request.body())))

    routes = [Route("/v1/debug", echo, methods=["POST"]), Route("/healthz", echo)]
    (tmp_path / "key").write_text("s3cret\n")
    monkeypatch.setenv("SD_TEST_KEY", "envkey")
    for key, kwargs in (("s3cret", {"api_key_env": "", "api_key_file": str(tmp_path / "key")}),
                        ("envkey", {"api_key_env": "SD_TEST_KEY", "api_key_file": ""})):
        app = Starlette(routes=routes)
        app.add_middleware(Guard, max_body_bytes=100, **kwargs)
        c = TestClient(app)
        r = c.post("/v1/debug", content=b"{}")
        assert r.status_code == 401 and "missing API key" in r.json()["error"]["message"]
        r = c.post("/v1/debug", content=b"{}", headers={"Authorization": "Bearer nope"})
        assert r.status_code == 401 and r.json()["error"]["message"] == "wrong API key"
        auth = {"Authorization": f"Bearer {key}"}
        assert c.post("/v1/debug", content=b"x" * 100, headers=auth).text == "100"
        assert c.post("/v1/debug", content=b"{}", headers={"X-API-Key": key}).text == "2"
        assert c.get("/healthz").status_code == 200  # probes need no key
        r = c.post("/v1/debug", content=b"x" * 101, headers=auth)
        assert r.status_code == 413 and r.json()["error"]["param"] == "body"
        chunked = c.post("/v1/debug", content=iter([b"x" * 60, b"x" * 60]), headers=auth)
        assert chunked.status_code == 413
    prefixed = Starlette(routes=routes)
    prefixed.add_middleware(Guard, max_body_bytes=100, api_key_env="SD_TEST_KEY",
                            api_key_file="")
    assert TestClient(prefixed, root_path="/standin").get("/healthz").status_code == 200
    open_app = Starlette(routes=routes)
    open_app.add_middleware(Guard, max_body_bytes=100, api_key_env="", api_key_file="")
    assert TestClient(open_app).post("/v1/debug", content=b"{}").status_code == 200
