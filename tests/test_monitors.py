"""Collapse and reward-hacking monitors: each number on hand-built tables, the KL estimate on a
tiny model, and one Dagster round where a blocking monitor refuses promotion."""

import copy
import math

import dagster as dg
import mlflow
import pandas as pd
import pytest
import torch

from rs_pipeline import monitors
from rs_pipeline.config import MonitorsConfig, merge
from rs_pipeline.errors import InputError
from rs_pipeline.testing_models import build_bpe_chat_tokenizer, build_tiny_llama
from tests.conftest import TINY, make_home


def _gens(groups: dict[str, list[str]]) -> pd.DataFrame:
    return pd.DataFrame([{"prompt_id": p, "sample_index": i, "completion": c}
                         for p, cs in groups.items() for i, c in enumerate(cs)])


def _scores(rows: list[tuple[str, str, float, float | None]]) -> pd.DataFrame:
    df = pd.DataFrame(rows, columns=["prompt_id", "completion", "reward", "verifier_score"])
    df["sample_index"] = df.groupby("prompt_id").cumcount()
    return df


def test_distinct_share_and_all_same_share():
    g = _gens({"a": ["x", "x", "y", "z"], "b": ["q", "q", "q", "q"]})
    assert monitors.distinct_share(g) == pytest.approx((3 / 4 + 1 / 4) / 2)
    assert monitors.all_same_share(g) == 0.5
    assert monitors.all_same_share(_gens({"a": ["x"]})) is None  # one sample: nothing to compare


def test_distinct_n_counts_words():
    assert monitors.distinct_n(["a b a", "a b"], 1) == pytest.approx(2 / 5)
    assert monitors.distinct_n(["a b a", "a b"], 2) == pytest.approx(2 / 3)
    assert monitors.distinct_n(["0120", "0120", "2211"], 1) == pytest.approx(2 / 3)
    assert monitors.distinct_n(["one", "two"], 2) is None


def test_length_reward_correlation():
    up = _scores([("p", "a", 1.0, None), ("p", "aa", 2.0, None), ("p", "aaaa", 4.0, None)])
    assert monitors.length_reward_corr(up) == pytest.approx(1.0)
    down = _scores([("p", "a", 3.0, None), ("p", "aa", 2.0, None), ("p", "aaa", 1.0, None)])
    assert monitors.length_reward_corr(down) == pytest.approx(-1.0)
    same = _scores([("p", "ab", 3.0, None), ("p", "cd", 2.0, None)])
    assert monitors.length_reward_corr(same) is None  # constant length: not measured


def test_reward_vs_verifier_divergence():
    s = _scores([("p1", "w", 0.9, 0.0), ("p1", "r", 0.1, 1.0),   # reward picks the wrong one
                 ("p2", "w", 0.2, 0.0), ("p2", "r", 0.8, 1.0),   # picks the right one
                 ("p3", "w", 0.5, 0.0), ("p3", "v", 0.4, 0.0)])  # nothing right: not counted
    assert monitors.wrong_pick_share(s) == 0.5
    ranked = _scores([("p", "a", 1.0, 0.0), ("p", "b", 2.0, 0.0), ("p", "c", 3.0, 1.0),
                      ("p", "d", 4.0, 1.0)])
    assert monitors.reward_verifier_rank_corr(ranked) == pytest.approx(2 / math.sqrt(5))
    no_verifier = _scores([("p", "a", 1.0, None), ("p", "b", 2.0, None)])
    assert monitors.wrong_pick_share(no_verifier) is None
    assert monitors.reward_verifier_rank_corr(no_verifier) is None


def test_expected_calibration_error():
    # every pair at p = 0.5 while 3 of 4 labels say a: off by 0.25
    assert monitors.expected_calibration_error([0] * 4, [0] * 4, [1, 0, 1, 1]) == \
        pytest.approx(0.25)
    # p = 0.9 for pairs labelled 1 and p = 0.1 for pairs labelled 0: off by 0.1 in both bins
    ln9 = math.log(9)
    assert monitors.expected_calibration_error([ln9, ln9, 0, 0], [0, 0, ln9, ln9],
                                               [1, 1, 0, 0], bins=5) == pytest.approx(0.1)
    assert monitors.expected_calibration_error([ln9], [0], [0.9]) == pytest.approx(0.0)
    assert monitors.expected_calibration_error([], [], []) is None


def test_judge_thresholds_blocking_and_unmeasured():
    cfg = MonitorsConfig(min_distinct_share=0.5, max_kl=1.0, blocking="kl_policy_base")
    verdicts = {m.name: m for m in monitors.judge(
        {"distinct_share": 0.25, "kl_policy_base": 3.0, "preference_ece": None,
         "length_reward_corr": float("nan")}, cfg)}
    assert set(verdicts) == set(monitors.MONITORS)
    assert not verdicts["distinct_share"].passed and not verdicts["distinct_share"].blocking
    kl = verdicts["kl_policy_base"]
    assert (kl.passed, kl.blocking, kl.value) == (False, True, 3.0)
    assert "monitors.max_kl" in kl.reason
    assert verdicts["preference_ece"].passed and verdicts["preference_ece"].value is None
    assert verdicts["length_reward_corr"].value is None
    with pytest.raises(InputError, match="bogus"):
        monitors.judge({}, MonitorsConfig(blocking="distinct_1, bogus"))


@pytest.fixture(scope="module")
def tiny_lm():
    tok = build_bpe_chat_tokenizer(["12+34=46", "hello there", "0120=0210"] * 20)
    return tok, build_tiny_llama(tok, hidden=32, layers=2, heads=2, positions=64)


def _sample(model, prompts: list[list[int]], new: int, seed: int) -> list[list[int]]:
    """Ancestral sampling at temperature 1 (no top-k/top-p), one row at a time."""
    gen = torch.Generator().manual_seed(seed)
    out = []
    for p in prompts:
        ids = list(p)
        with torch.no_grad():
            for _ in range(new):
                logits = model(input_ids=torch.tensor([ids])).logits[0, -1].float()
                ids.append(int(torch.multinomial(torch.softmax(logits, -1), 1, generator=gen)))
        out.append(ids[len(p):])
    return out


def test_kl_estimate_is_zero_for_the_same_model_and_positive_for_a_perturbed_copy(tiny_lm):
    tok, base = tiny_lm
    policy = copy.deepcopy(base)
    torch.manual_seed(1)
    with torch.no_grad():
        policy.lm_head.weight.add_(torch.randn_like(policy.lm_head.weight))  # sharper, other

    prompts = [tok("12+34=", add_special_tokens=False)["input_ids"],
               tok("hello", add_special_tokens=False)["input_ids"]] * 24
    completions = _sample(policy, prompts, 6, seed=0)
    assert monitors.kl_estimate(base, base, prompts, completions) == pytest.approx(0.0, abs=1e-6)
    kl = monitors.kl_estimate(policy, base, prompts, completions, batch_size=7)
    assert kl > 0.1
    # padding in a batch changes nothing: batched log-probs equal one-at-a-time ones
    mixed = [prompts[0], prompts[1]]
    comp = [completions[0][:2], completions[1]]
    batched = monitors.completion_logprobs(policy, mixed, comp, tok.pad_token_id)
    single = [monitors.completion_logprobs(policy, [p], [c])[0] for p, c in zip(mixed, comp)]
    assert batched == pytest.approx(single, abs=1e-4)


@pytest.mark.slow
def test_a_round_records_every_monitor_and_a_blocking_one_refuses_promotion(tmp_path,
                                                                            monkeypatch):
    from rs_pipeline.defs.runner import run_bootstrap, run_round
    from rs_pipeline.history import round_row
    from rs_pipeline.storage import AssetStore

    settings = merge(TINY, {"gate": {"tolerance": 1.0, "hacking_reward_margin": 1e9},
                            "monitors": {"kl_samples": 32, "max_kl": -1000.0,
                                         "blocking": "kl_policy_base"}})
    home = make_home(tmp_path / "home", monkeypatch, settings)
    instance = dg.DagsterInstance.get()
    assert run_bootstrap(instance).success
    key, result = run_round(instance)
    assert not result.success
    evaluations = {e.check_name: e for e in result.get_asset_check_evaluations()}
    for name in monitors.MONITORS:
        e = evaluations[f"monitor_{name}"]
        assert e.asset_key == dg.AssetKey("round_eval")
        assert isinstance(e.metadata["value"].value, float)
    measured = {n for n in monitors.MONITORS if evaluations[f"monitor_{n}"].metadata[
        "measured"].value}
    # rev8 has a verifier and held-out pairs; its completions are one word (no bigrams), and
    # their lengths may all be the same
    assert measured >= set(monitors.MONITORS) - {"length_reward_corr", "distinct_2"}
    kl = evaluations["monitor_kl_policy_base"]
    assert not kl.passed and kl.severity == dg.AssetCheckSeverity.ERROR
    assert all(e.severity == dg.AssetCheckSeverity.WARN for n, e in evaluations.items()
               if n.startswith("monitor_") and n != "monitor_kl_policy_base")
    assert evaluations["no_regression_vs_champion"].passed  # only the monitor refused
    store = AssetStore(str(home / "assets"))
    ev = store.read_record("round_eval", key)
    assert not ev.decision.promoted and "monitor kl_policy_base" in ev.decision.reason
    assert round_row(store, key).state == "refused"
    assert not store.exists("promotion", key, "json")
    report = store.read_record("round_monitors", key)
    assert report.kl_samples == 32
    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    run = client.search_runs([client.get_experiment_by_name("rs_pipeline").experiment_id],
                             f"tags.round = '{key}'")[0]
    for name in measured:
        value = evaluations[f"monitor_{name}"].metadata["value"].value
        assert run.data.metrics[f"monitor/{name}"] == pytest.approx(value, abs=1e-5)
    assert run.data.metrics["gate/promoted"] == 0.0
