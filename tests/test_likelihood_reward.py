"""``preference.reward: likelihood``: a causal LM's log-likelihood of the completion as the reward,
trained by the soft-label BT loss, saved and reloaded as a checkpoint of its own, refused where
its settings cannot hold."""

import random

import pytest
import torch

from rs_pipeline import preference
from rs_pipeline.config import config_from_dict
from rs_pipeline.errors import InputError
from rs_pipeline.likelihood_reward import is_likelihood, problems
from rs_pipeline.modeling import likelihood_preference, load_policy, load_preference, weights_id
from rs_pipeline.tasks import get_task
from rs_pipeline.training import IGNORE, encode_completions
from tests.conftest import TrainingCrash, crash_at_step_3


def _log_likelihood(policy_path, prompts, completions, mode):
    """Sum of the completion's token log-probs (and its end token), computed row by row from the
    LM's full logits: what the reward must equal."""
    lm, tok = load_policy(policy_path)
    out = []
    for row in encode_completions(tok, prompts, completions, mode):
        ids, labels = torch.tensor([row["input_ids"]]), torch.tensor(row["labels"][1:])
        with torch.no_grad():
            logp = torch.log_softmax(lm(input_ids=ids).logits[0, :-1].float(), -1)
        keep = labels != IGNORE
        out.append(logp[keep].gather(1, labels[keep][:, None]).sum().item())
    return out


@pytest.mark.parametrize("policy", ["tiny_policy", "tiny_chat_policy"])
def test_the_reward_is_the_log_likelihood_of_the_completion(policy, request):
    """The demo's char model and a Llama with a byte-level BPE tokenizer (prompt read without
    its chat template, as every preference model reads text), rows of different lengths in one
    batch."""
    path = request.getfixturevalue(policy)
    model, tok = likelihood_preference(path)
    assert is_likelihood(model) and model.config.num_labels == 1
    prompts = get_task("rev8").prompts()[:5]
    completions = ["abc", "a", "hgfedcba", "", "zz"]
    mode = "off" if policy == "tiny_chat_policy" else "auto"
    expected = _log_likelihood(path, prompts, completions, mode)
    assert preference.score(model, tok, prompts, completions) == pytest.approx(expected, abs=1e-4)


def _rev8_pairs():
    task, rng = get_task("rev8"), random.Random(0)
    prompts = task.prompts()[2000:2600]
    train = [(p, task.answer(p), task.bugged_answer(p), 1.0) for p in prompts[:400]]
    train += [(p, task.wrong_answer(p, rng), task.answer(p), 0.0) for p in prompts[:400]]
    # the base policy's mode is the bug: its likelihood prefers the bug before training
    held = [(p, task.answer(p), task.bugged_answer(p), 1.0) for p in prompts[400:]
            if task.answer(p) != task.bugged_answer(p)]
    return train, held


def test_it_learns_resumes_to_the_same_weights_and_reloads_by_its_content_id(
        tiny_policy, tmp_path, monkeypatch):
    train, held = _rev8_pairs()
    model, tok = likelihood_preference(tiny_policy)
    before = preference.pair_accuracy(model, tok, held)
    args = dict(epochs=2, lr=1e-3, batch_size=64, seed=0, checkpoint_steps=2)
    metrics = preference.train_preference(model, tok, train, checkpoint_dir=tmp_path / "a", **args)
    after = preference.pair_accuracy(model, tok, held)
    assert metrics["steps"] == 26 and before < 0.5 <= 0.9 <= after

    interrupted, _ = likelihood_preference(tiny_policy)
    original = preference.BradleyTerryTrainer.__init__

    def crashing(self, *a, **kw):
        original(self, *a, **kw)
        self.add_callback(crash_at_step_3())

    monkeypatch.setattr(preference.BradleyTerryTrainer, "__init__", crashing)
    with pytest.raises(TrainingCrash):
        preference.train_preference(interrupted, tok, train, checkpoint_dir=tmp_path / "b", **args)
    monkeypatch.setattr(preference.BradleyTerryTrainer, "__init__", original)
    resumed, _ = likelihood_preference(tiny_policy)
    again = preference.train_preference(resumed, tok, train, checkpoint_dir=tmp_path / "b", **args)
    assert again["resumed_from_step"] == 2 and again["steps"] == 26
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(),
                                                 resumed.state_dict().values()))

    model.save_pretrained(tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    model_id = weights_id(model, "rm")
    loaded, ltok = load_preference(tmp_path / "rm", expected_id=model_id)
    assert is_likelihood(loaded)
    prompts = [p for p, *_ in held[:50]]
    completions = [a for _, a, *_ in held[:50]]
    assert preference.score(loaded, ltok, prompts, completions) == preference.score(
        model, tok, prompts, completions)
    with torch.no_grad():
        next(loaded.parameters()).add_(1e-3)
    loaded.save_pretrained(tmp_path / "rm")
    with pytest.raises(InputError, match="does not hold checkpoint"):
        load_preference(tmp_path / "rm", expected_id=model_id)


def test_the_preferred_nll_is_the_decided_completions_per_token_log_likelihood():
    """``-(relu(2hp - 1) * r_A / len_A + relu(1 - 2hp) * r_B / len_B)``, mean over pairs: a
    tie adds nothing, a soft label weighs its preferred side by how decided it is."""
    r = torch.tensor([-2.0, -6.0, -1.0, -3.0, -4.0, -0.5])  # A of 3 pairs, then their B
    lengths = [2, 3, 1, 4, 2, 1]
    marks = torch.zeros(6, 6, dtype=torch.long)
    for i, n in enumerate(lengths):
        marks[i, 1:1 + n] = 1  # scored positions are [:, 1:]
    batch = {"token_type_ids": marks, "attention_mask": torch.ones(6, 6, dtype=torch.long),
             "hp": torch.tensor([1.0, 0.5, 0.1])}
    want = -((-2.0 / 2) + 0.0 + 0.8 * (-0.5 / 1)) / 3
    assert preference.preferred_nll(r, batch).item() == pytest.approx(want)


def test_the_nll_term_teaches_the_lm_to_produce_what_the_labels_prefer(tiny_policy):
    """Same pairs, same steps: with ``nll_weight`` the reward model's own per-token
    negative log-likelihood of held-out right answers ends at most half BT alone's, and it ranks the
    held-out pairs at least as well; a reward head is refused."""
    train, held = _rev8_pairs()
    prompts, right = [p for p, *_ in held], [a for _, a, *_ in held]
    lengths = torch.tensor([len(a) + 1 for a in right], dtype=torch.float64)  # chars + end
    out = {}
    for weight in (0.0, 3.0):
        model, tok = likelihood_preference(tiny_policy)
        preference.train_preference(model, tok, train, epochs=2, lr=1e-3, batch_size=64, seed=0,
                                    nll_weight=weight)
        per_token = torch.tensor(preference.score(model, tok, prompts, right)) / lengths
        out[weight] = (per_token.mean().item(), preference.pair_accuracy(model, tok, held))
    # per-token NLL of the right answers at least halved (measured: 0.052 -> 0.015 nats)
    assert out[3.0][0] > out[0.0][0] / 2 and out[3.0][1] >= max(0.9, out[0.0][1] - 0.02), out
    head, htok = load_preference(tiny_policy, heads=1)
    with pytest.raises(ValueError, match="nll_weight needs a likelihood reward"):
        preference.train_preference(head, htok, train[:8], epochs=1, lr=1e-3, batch_size=8,
                                    seed=0, nll_weight=1.0)


def test_settings_it_cannot_honour_are_refused_naming_them(tiny_policy, minilm_base):
    from transformers import AutoConfig

    def refused(preference_settings, base=None):
        cfg = config_from_dict({"preference": {"reward": "likelihood", **preference_settings}})
        base_config = AutoConfig.from_pretrained(base, local_files_only=True) if base else None
        return problems(cfg.preference, base_config)

    assert refused({}) == [] and refused({}, tiny_policy) == []
    assert "preference.ensemble_heads must be 1" in " ".join(refused({"ensemble_heads": 3}))
    assert "preference.lora.enabled must be false" in " ".join(
        refused({"lora": {"enabled": True}}))
    assert "needs a causal LM: preference.base_path is a BertForSequenceClassification" in \
        " ".join(refused({}, minilm_base))
    assert problems(config_from_dict({"preference": {"ensemble_heads": 3}}).preference, None) == []
    assert problems(config_from_dict({"preference": {"nll_weight": 1.0}}).preference, None) == [
        "setting preference.nll_weight (1.0) needs preference.reward='likelihood' (a reward head "
        "has no likelihood to train)"]


def test_preflight_refuses_them_before_any_model_work(tiny_policy, tmp_path):
    from rs_pipeline.context import RunContext
    from rs_pipeline.preflight import preflight

    cfg = config_from_dict({"preference": {"reward": "likelihood", "ensemble_heads": 2}})
    found = preflight(RunContext(cfg, tmp_path / "home"))
    assert [p for p in found if "likelihood" in p] == [
        "setting preference.reward='likelihood' has one output: preference.ensemble_heads must be "
        "1, got 2"]


def test_a_round_through_dagster_judges_with_the_likelihood_and_refreshes_it(
        tmp_path, monkeypatch, tiny_chat_policy):
    """Bootstrap and one round with ``preference.reward: likelihood`` started from a user's own
    causal LM (``preference.base_path``: a Llama with a byte-level BPE tokenizer, not the demo
    policy's characters): the seed model and the round's refresh are likelihood checkpoints (the
    refresh continues the seed's, both trained with the preferred answers' NLL term), and every
    score is the refreshed model's log-likelihood of that completion."""
    import json

    import dagster as dg

    from rs_pipeline.config import merge
    from rs_pipeline.defs.runner import run_bootstrap, run_round
    from rs_pipeline.storage import AssetStore
    from tests.conftest import PROMOTE_ALL, make_home

    home = make_home(tmp_path / "home", monkeypatch,
                     merge(PROMOTE_ALL, {"preference": {"reward": "likelihood", "nll_weight": 1.0,
                                                        "base_path": str(tiny_chat_policy)}}))
    instance = dg.DagsterInstance.get()
    assert run_bootstrap(instance).success
    key, result = run_round(instance)
    assert result.success
    store = AssetStore(str(home / "assets"))
    seed, refreshed = (store.read_record("seed_preference_model"),
                       store.read_record("preference_model", key))
    assert refreshed.parent_id == seed.id and refreshed.train_pairs > 0
    for record in (seed, refreshed):
        conf = json.loads((home / "assets" / record.path / "config.json").read_text())
        assert conf["rs_reward"] == "likelihood" and conf["architectures"] == ["LlamaForCausalLM"]
        assert 0.0 <= record.pair_acc <= 1.0
    model, tok = load_preference(home / "assets" / refreshed.path, expected_id=refreshed.id)
    assert len(tok) > 100  # the base folder's BPE tokenizer travels with the checkpoints
    scores = store.read_table("scores", key).to_pydict()
    rows = range(0, len(scores["reward"]), 7)
    again = preference.score(model, tok, [scores["prompt"][i] for i in rows],
                             [scores["completion"][i] for i in rows])
    assert again == pytest.approx([scores["reward"][i] for i in rows], abs=1e-5)
    assert all(r <= 0 for r in scores["reward"])  # log-likelihoods
