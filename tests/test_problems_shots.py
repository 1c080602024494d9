"""Few-shot prompts for base models: shots from the prompt split only, the plain template's
end-of-turn marker as a stop string, and code taken from the first assistant turn."""

from __future__ import annotations

import pytest

from selfdebug.llm.extract import extract_code, extract_explanation, first_turn
from selfdebug.llm.prompts import FALLBACK_END, generate_messages, render_prompt, stop_strings
from selfdebug.problems import load_problems
from selfdebug.problems.shots import FewShotConfig, few_shot_pairs


def test_shots_come_from_the_prompt_split_and_never_leak(shared_data):
    cfg = FewShotConfig(k=3, source=str(shared_data / "mbpp.jsonl"))
    test_ids = [p.task_id for p in load_problems(shared_data / "mbpp.jsonl", split="test")]
    shots = few_shot_pairs(cfg, exclude=test_ids)
    assert len(shots) == 3 and shots[0][0].startswith("Write a function to find the minimum")
    assert all("def " in code for _, code in shots)
    # a shot among the evaluated problems is an error naming it
    with pytest.raises(ValueError, match=r"shots \['Mbpp/2'\] are among the problems"):
        few_shot_pairs(cfg, exclude=["Mbpp/2", "Mbpp/500"])
    with pytest.raises(ValueError, match="has 10 problems with a solution, 11 asked for"):
        few_shot_pairs(FewShotConfig(k=11, source=cfg.source))
    assert few_shot_pairs(FewShotConfig()) == []
    with pytest.raises(ValueError, match="needs few_shot.source"):
        FewShotConfig(k=3).validate()


def test_base_model_prompt_carries_k_shots_and_stops_at_the_marker(shared_data):
    shots = few_shot_pairs(FewShotConfig(k=3, source=str(shared_data / "mbpp.jsonl")))
    text = render_prompt(None, generate_messages("Write a function add(a, b).", shots))
    assert text.count("<|user|>") == 4 and text.count("<|assistant|>") == 4  # 3 shots + ask
    assert text.count(FALLBACK_END) == 7 and text.endswith("<|assistant|>\n")
    assert stop_strings(None) == [FALLBACK_END]

    class Chat:  # a tokenizer with a chat template stops at its own EOS
        chat_template = "{{ messages }}"

    assert stop_strings(Chat()) == []


def test_code_is_taken_from_the_first_assistant_turn():
    reply = ("The sum.\n```python\ndef add(a, b):\n    return a + b\n```<|end|>\n<|user|>\n"
             "Now multiply.<|end|>\n<|assistant|>\n```python\ndef mul(a, b):\n"
             "    return a * b\n```")
    assert first_turn(reply).endswith("```")
    assert extract_code(reply) == "def add(a, b):\n    return a + b"
    assert extract_explanation(reply) == "The sum."
    # a reply without invented turns is unchanged: the last python block of it
    plain = "```python\nx = 1\n```\nbetter:\n```python\nx = 2\n```"
    assert first_turn(plain) == plain and extract_code(plain) == "x = 2"


def test_eval_init_prompts_of_a_base_model_carry_the_shots(shared_data, tiny_model_dir,
                                                           tmp_path):
    import shutil
    import types

    from selfdebug.evaluate.config import EvalConfig, ModelSpec
    from selfdebug.evaluate.pipeline import init_shots
    from selfdebug.evaluate.stages import init_rows

    mbpp = str(shared_data / "mbpp.jsonl")
    test = {p.task_id: p for p in load_problems(mbpp, split="test", limit=2)}
    cfg = EvalConfig(few_shot=FewShotConfig(k=3, source=mbpp))
    logs = []
    double = types.SimpleNamespace(spec=ModelSpec("base", engine="empty"), path="")
    shots = init_shots(cfg, double, test, logs.append)
    (row, _) = init_rows("base", "MBPP", list(test.values()),
                         lambda m: render_prompt(None, m), shots)
    assert row["prompt"].count("<|assistant|>") == 4  # 3 shots + the task
    # a model with a chat template (the tiny model has one) is prompted without shots
    chat = types.SimpleNamespace(spec=ModelSpec("chat", path=str(tiny_model_dir)),
                                 path=str(tiny_model_dir))
    assert init_shots(cfg, chat, test, logs.append) is None and "chat template" in logs[-1]
    # its copy without a template is a base model: shots again
    base_dir = tmp_path / "base"
    shutil.copytree(tiny_model_dir, base_dir)
    for f in base_dir.glob("*.jinja"):
        f.unlink()
    cfg_file = base_dir / "tokenizer_config.json"
    import json

    tc = json.loads(cfg_file.read_text())
    tc.pop("chat_template", None)
    cfg_file.write_text(json.dumps(tc))
    base = types.SimpleNamespace(spec=ModelSpec("base", path=str(base_dir)), path=str(base_dir))
    assert len(init_shots(cfg, base, test, logs.append)) == 3
    # shots drawn from the evaluated split are refused
    with pytest.raises(ValueError, match="among the problems"):
        init_shots(EvalConfig(few_shot=FewShotConfig(k=3, source=mbpp, split="test")), double,
                   test, logs.append)


def test_synth_sampling_requests_carry_the_shots(shared_data):
    import json

    from selfdebug.synth.config import SynthConfig
    from selfdebug.synth.rows import generate_request

    mbpp = str(shared_data / "mbpp.jsonl")
    cfg = SynthConfig(few_shot=FewShotConfig(k=3, source=mbpp))
    cfg.validate()
    assert cfg.fingerprint() != SynthConfig().fingerprint()  # other prompts, other data
    from selfdebug.problems.shots import shots_for_model

    train = {p.task_id: p for p in load_problems(mbpp, split="train", limit=3)}
    shots = shots_for_model(cfg.few_shot, "", train)  # "" = the plain template
    messages = json.loads(generate_request(next(iter(train.values())).prompt, shots))
    assert [m["role"] for m in messages] == ["user", "assistant"] * 3 + ["user"]
    with pytest.raises(ValueError, match="among the problems"):
        shots_for_model(FewShotConfig(k=3, source=mbpp, split=""), "", {"Mbpp/1": None})


def test_turn_stop_is_added_once_and_only_for_the_plain_template():
    from selfdebug.llm.prompts import with_turn_stop

    assert with_turn_stop({"max_tokens": 8}, None) == {"max_tokens": 8, "stop": [FALLBACK_END]}
    assert with_turn_stop({"stop": ["x", FALLBACK_END]}, None) == {"stop": ["x", FALLBACK_END]}

    class Chat:
        chat_template = "{{ messages }}"

    assert with_turn_stop({"stop": ["x"]}, Chat()) == {"stop": ["x"]}
