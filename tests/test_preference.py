import math

import torch

from rs_pipeline.modeling import load_preference, preference_from_policy
from rs_pipeline.preference import bt_loss, pair_accuracy, score, train_preference
from rs_pipeline.tasks import get_task
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
    metrics = train_preference(model, tok, train, epochs=3, lr=1e-3, batch_size=32, seed=0)
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
