import math

import datasets
import pytest
import torch
import torch.nn.functional as F
from transformers import Trainer

from rs_pipeline.config import LoraConfig
from rs_pipeline.lora import fine_tune
from rs_pipeline.modeling import load_preference, preference_from_policy, saved_heads, weights_id
from rs_pipeline.preference import (
    SoftPairCollator,
    bootstrap_weights,
    bt_loss,
    mean_and_spread,
    pair_accuracy,
    score,
    score_heads,
    train_preference,
)
from rs_pipeline.preference_inputs import context_length, encode, pad_rows
from rs_pipeline.tasks import get_task
from rs_pipeline.training import run_trainer
from tests.conftest import sentiment_pairs


def _sig(x):
    return 1 / (1 + math.exp(-x))


def test_soft_label_bt_loss_matches_hand_computed_values():
    r_a = torch.tensor([2.0, -1.0, 0.5, 0.0])
    r_b = torch.tensor([0.5, 1.0, 0.5, 3.0])
    hp = torch.tensor([1.0, 0.25, 0.7, 0.0])
    expected = []
    for a, b, h in zip(r_a.tolist(), r_b.tolist(), hp.tolist()):
        expected.append(-h * math.log(_sig(a - b)) - (1 - h) * math.log(_sig(b - a)))
    assert abs(bt_loss(r_a, r_b, hp).item() - sum(expected) / 4) < 1e-6
    # hard label 1 with margin 1.5: -log s(1.5) = 0.201413
    assert abs(bt_loss(r_a[:1], r_b[:1], hp[:1]).item() - 0.2014133) < 1e-6
    # hp = 0.5 on equal rewards: log 2
    assert abs(bt_loss(torch.zeros(1), torch.zeros(1), torch.tensor([0.5])).item()
               - math.log(2)) < 1e-6


def test_bt_loss_gradient_is_zero_at_the_soft_optimum():
    d = torch.tensor([math.log(0.7 / 0.3)], requires_grad=True)
    bt_loss(d, torch.zeros(1), torch.tensor([0.7])).backward()
    assert abs(d.grad.item()) < 1e-6


def test_preference_model_learns_to_rank_right_over_bugged(tiny_policy):
    task = get_task("rev8")
    prompts = task.prompts()[2000:2600]
    train = [(p, task.answer(p), task.bugged_answer(p), 1.0) for p in prompts[:400]
             if task.answer(p) != task.bugged_answer(p)]
    train += [(p, task.wrong_answer(p, __import__("random").Random(i)), task.answer(p), 0.0)
              for i, p in enumerate(prompts[:400])]
    held = [(p, task.answer(p), task.bugged_answer(p), 1.0) for p in prompts[400:]
            if task.answer(p) != task.bugged_answer(p)]
    model, tok = preference_from_policy(tiny_policy, seed=0)
    before = pair_accuracy(model, tok, held)
    metrics = train_preference(model, tok, train, epochs=4, lr=1e-3, batch_size=32, seed=0)
    after = pair_accuracy(model, tok, held)
    assert metrics["steps"] > 0 and metrics["train_loss"] < math.log(2)
    assert after >= 0.9 and after > before
    r = score(model, tok, [held[0][0]] * 2, [held[0][1], held[0][2]])
    assert r[0] > r[1]


def test_a_minilm_preference_model_trains_and_scores_text(minilm_base):
    """A BERT-style encoder (no EOS, its own [CLS]/[SEP]) as the preference model."""
    train, held = sentiment_pairs()
    model, tok = load_preference(minilm_base)
    before = pair_accuracy(model, tok, held)
    metrics = train_preference(model, tok, train, epochs=1, lr=2e-4, batch_size=16, seed=0)
    assert metrics["steps"] == 4 and before < 0.5
    assert pair_accuracy(model, tok, held) >= 0.9
    good, bad = score(model, tok, ["How was the trip?"] * 2, ["It was lovely.", "It was lousy."])
    assert good > bad


def _rev8_pairs(lo: int, hi: int):
    task = get_task("rev8")
    return [(p, task.answer(p), task.bugged_answer(p), 1.0) for p in task.prompts()[lo:hi]
            if task.answer(p) != task.bugged_answer(p)]


def test_ensemble_heads_start_equal_and_differ_only_through_their_bootstraps(tiny_policy):
    """Three heads on one body, all starting from the same weights: identical data would keep
    them identical, so any difference after training comes from each head's own bootstrap."""
    train, held = _rev8_pairs(2000, 2200), _rev8_pairs(2200, 2300)
    weights = [bootstrap_weights(0, p, 3) for p in train]
    assert weights == [bootstrap_weights(0, p, 3) for p in train]  # seeded by (seed, pair)
    assert all(w == int(w) and w >= 0 for row in weights for w in row)
    assert 0.8 < sum(map(sum, weights)) / (3 * len(weights)) < 1.2  # Poisson(1)
    assert sum(len(set(row)) > 1 for row in weights) > len(weights) / 2  # heads see other data
    model, tok = preference_from_policy(tiny_policy, seed=0, heads=3)
    assert model.score.weight.shape[0] == 3 and model.config.num_labels == 3
    with torch.no_grad():
        model.score.weight[:] = model.score.weight[0].clone()
    texts = [p[0] for p in held], [p[1] for p in held]
    before = score_heads(model, tok, *texts)
    assert torch.equal(before[:, 0], before[:, 1]) and torch.equal(before[:, 1], before[:, 2])
    acc_before = pair_accuracy(model, tok, held)
    train_preference(model, tok, train, epochs=2, lr=1e-3, batch_size=32, seed=0)
    heads = score_heads(model, tok, *texts)
    assert heads.shape == (len(held), 3)
    assert not torch.allclose(heads[:, 0], heads[:, 1], atol=1e-4)
    assert not torch.allclose(heads[:, 1], heads[:, 2], atol=1e-4)
    mean, spread = mean_and_spread(heads)
    assert score(model, tok, *texts) == pytest.approx(heads.mean(dim=1).tolist(), abs=1e-6)
    assert mean == pytest.approx(heads.mean(dim=1).tolist(), abs=1e-6)
    assert spread == pytest.approx(torch.std(heads, dim=1).tolist(), abs=1e-6)
    assert min(spread) > 0
    assert pair_accuracy(model, tok, held) > acc_before  # the mean learned to rank


class _OneHeadTrainer(Trainer):
    """The preference trainer as it was before ensembles (the regression reference)."""

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        keys = ("input_ids", "attention_mask", "token_type_ids")
        r = model(**{k: inputs[k] for k in keys if k in inputs}).logits[:, 0]
        half = r.shape[0] // 2
        return F.binary_cross_entropy_with_logits(r[:half] - r[half:], inputs["hp"])


def test_one_head_trains_and_scores_exactly_as_before(tiny_policy):
    train, held = _rev8_pairs(2000, 2100), _rev8_pairs(2200, 2230)
    train = [(p, a, b, 0.8 if i % 3 else 0.3) for i, (p, a, b, _) in enumerate(train)]
    model, tok = preference_from_policy(tiny_policy, seed=0)
    train_preference(model, tok, train, epochs=1, lr=1e-3, batch_size=16, seed=0)

    ref, rtok = preference_from_policy(tiny_policy, seed=0)
    prompts = [p[0] for p in train]
    rows = datasets.Dataset.from_dict({
        "a": encode(rtok, prompts, [p[1] for p in train], context_length(ref.config, rtok)),
        "b": encode(rtok, prompts, [p[2] for p in train], context_length(ref.config, rtok)),
        "hp": [p[3] for p in train]})
    ref.config.pad_token_id = rtok.pad_token_id
    run_trainer(ref, rows, SoftPairCollator(rtok.pad_token_id), trainer_cls=_OneHeadTrainer,
                lr=1e-3, batch_size=16, seed=0, epochs=1)
    assert weights_id(model, "rm") == weights_id(ref, "rm")
    texts = [p[0] for p in held], [p[1] for p in held]
    with torch.no_grad():
        expected = ref(**pad_rows(encode(rtok, *texts, 64), rtok.pad_token_id)).logits[:, 0]
    assert torch.allclose(torch.tensor(score(model, tok, *texts)), expected, atol=1e-5)
    assert mean_and_spread(score_heads(model, tok, *texts))[1] == [0.0] * len(held)


def test_ensemble_on_minilm_with_lora_trains_its_new_head_fully_and_reloads(minilm_base, tmp_path):
    """An encoder base whose one-output head is replaced by a fresh 3-output head, trained
    through LoRA (the head fully, the body by adapters), merged, saved, reloaded with 3 heads."""
    train, held = sentiment_pairs()
    model, tok = load_preference(minilm_base, heads=3)
    assert model.classifier.out_features == 3
    merged, _, lora = fine_tune(model, LoraConfig(enabled=True, r=4, alpha=8.0), "SEQ_CLS",
                                "preference.lora", lambda m: train_preference(
                                    m, tok, train, epochs=2, lr=2e-3, batch_size=16, seed=0))
    assert "classifier" in lora.modules_to_save
    assert pair_accuracy(merged, tok, held) >= 0.9
    merged.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert saved_heads(tmp_path) == 3
    loaded, ltok = load_preference(tmp_path)
    texts = ["How was the trip?"] * 2, ["It was lovely.", "It was lousy."]
    heads = score_heads(loaded, ltok, *texts)
    assert heads.shape == (2, 3)
    assert torch.allclose(heads, score_heads(merged, tok, *texts), atol=1e-5)
    good, bad = score(loaded, ltok, *texts)
    assert good > bad
