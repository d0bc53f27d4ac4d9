"""DPO on a round's pairs (``rs_pipeline.dpo``): the tokens it trains on, that it moves the
policy towards the chosen answers, bit-for-bit reproducibly, and resumes like SFT."""

import pandas as pd
import pytest
import torch

from rs_pipeline import dpo
from rs_pipeline.config import config_from_dict, merge
from rs_pipeline.modeling import load_policy
from rs_pipeline.preflight import _dpo_settings
from rs_pipeline.selection import dpo_pairs
from rs_pipeline.tasks import get_task
from rs_pipeline.training import encode_completions
from tests.conftest import TINY, TrainingCrash, crash_at_step_3

TASK = get_task("rev8")
PROMPTS = [p for p in TASK.prompts()[4000:4200] if TASK.answer(p) != TASK.bugged_answer(p)][:64]
CHOSEN = [TASK.answer(p) for p in PROMPTS]
REJECTED = [TASK.bugged_answer(p) for p in PROMPTS]


def _train(folder, **kw):
    model, tok = load_policy(folder)
    before = dpo.pair_logps(model, tok, PROMPTS, CHOSEN, REJECTED)
    metrics = dpo.train_on_pairs(model, tok, PROMPTS, CHOSEN, REJECTED, beta=0.1, lr=3e-3,
                                 batch_size=16, seed=0, epochs=2, **kw)
    after = dpo.pair_logps(model, tok, PROMPTS, CHOSEN, REJECTED)
    return model, metrics, before, after


@pytest.mark.parametrize("policy", ["tiny_policy", "tiny_chat_policy"])
def test_dpo_sees_the_sft_tokens_and_raises_the_log_prob_margin(policy, request):
    folder = request.getfixturevalue(policy)
    _, tok = load_policy(folder)
    rows = dpo.encode_pairs(tok, PROMPTS, CHOSEN, REJECTED)
    sft = encode_completions(tok, PROMPTS, CHOSEN)
    assert [r["prompt_ids"] + r["chosen_ids"] for r in rows] == [s["input_ids"] for s in sft]
    if policy == "tiny_chat_policy":  # the answer ends with <|im_end|>, not EOS
        assert {r["rejected_ids"][-1] for r in rows} == {tok.convert_tokens_to_ids("<|im_end|>")}
    model, metrics, before, after = _train(folder)
    margin_before, margin_after = (before[0] - before[1]).mean(), (after[0] - after[1]).mean()
    assert metrics["steps"] == 8, (margin_before, margin_after)
    assert margin_after > margin_before + 0.8, (margin_before, margin_after)  # 1.1 and 6.3 nats here


def test_dpo_is_reproducible_and_an_interrupted_one_resumes_to_the_same_weights(
        tiny_policy, tmp_path, monkeypatch):
    whole, _, _, _ = _train(tiny_policy, checkpoint_dir=tmp_path / "a", checkpoint_steps=2)
    original_init = dpo._PretokenizedDPOTrainer.__init__

    def crashing_init(self, *args, **kwargs):
        original_init(self, *args, **kwargs)
        self.add_callback(crash_at_step_3())

    monkeypatch.setattr(dpo._PretokenizedDPOTrainer, "__init__", crashing_init)
    with pytest.raises(TrainingCrash):
        _train(tiny_policy, checkpoint_dir=tmp_path / "b", checkpoint_steps=2)
    monkeypatch.setattr(dpo._PretokenizedDPOTrainer, "__init__", original_init)
    resumed, metrics, _, _ = _train(tiny_policy, checkpoint_dir=tmp_path / "b", checkpoint_steps=2)
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 8
    assert all(torch.equal(a, b) for a, b in zip(whole.state_dict().values(),
                                                 resumed.state_dict().values()))
    assert not (tmp_path / "b").exists()


def _scores():
    rows = [("a", 0, "r", 0.5, 1.0), ("a", 1, "w1", 0.9, 0.0), ("a", 2, "w2", 0.1, 0.0),
            ("a", 3, "r2", 0.2, 1.0), ("a", 4, "w1", 0.0, 0.0), ("b", 0, "q", 1.0, 0.0),
            ("b", 1, "q2", 0.0, 0.0), ("c", 0, "s", 0.3, 1.0)]
    df = pd.DataFrame(rows, columns=["prompt_id", "sample_index", "completion",
                                     "selection_score", "verifier_score"])
    df["prompt"], df["round"], df["policy_id"], df["reward_model_id"] = (
        df["prompt_id"] + "?", "r0001", "pol-x", "rm-x")
    return df


def test_pairs_best_vs_k_worst_and_across_verifier_outcomes():
    def cells(df):
        return df[["prompt_id", "chosen", "rejected", "margin"]].round(6).values.tolist()

    assert cells(dpo_pairs(_scores(), 0.0)) == [["a", "w1", "w2", 0.8], ["b", "q", "q2", 1.0]]
    assert cells(dpo_pairs(_scores(), 0.0, 2)) == [["a", "w1", "w2", 0.8], ["a", "w1", "r2", 0.7],
                                                  ["b", "q", "q2", 1.0]]
    assert cells(dpo_pairs(_scores(), 0.75, 3)) == [["a", "w1", "w2", 0.8], ["b", "q", "q2", 1.0]]
    # right vs the best-scored wrong ones, even where the score prefers the wrong one
    assert cells(dpo_pairs(_scores(), 0.75, 2, "verifier")) == [["a", "r", "w2", 0.4],
                                                               ["a", "r", "w1", -0.4]]


def test_settings_that_leave_dpo_without_pairs_are_refused():
    def problems(**over):
        return _dpo_settings(config_from_dict(merge(TINY, over)), has_verifier=True)

    assert problems() == [] and problems(sft={"method": "dpo"}) == []
    assert problems(sft={"method": "dpo"}, generation={"n": 1}) == [
        "setting sft.method='dpo' trains on pairs of a prompt's samples: generation.n must be "
        "at least 2, got 1"]
    assert problems(sft={"method": "sft+dpo"}, selection={"dpo_pairs_per_prompt": 4}) == [
        "setting selection.dpo_pairs_per_prompt=4 cannot be met: 4 samples per prompt give at "
        "most 3 rejected completions"]
    assert "differ by at most 1" in problems(
        sft={"method": "dpo"}, selection={"selector": "verifier", "dpo_min_margin": 1.5})[0]
    s = config_from_dict(merge(TINY, {"selection": {"dpo_pairing": "verifier"}}))
    assert "needs a verifier" in _dpo_settings(s, has_verifier=False)[0]
