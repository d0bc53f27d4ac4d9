"""The tester's scenario, through Dagster on tiny models: a task without a verifier, a chat
policy, preference labels that push it wrong, and an exact-match check kept outside the package
as ``gate.hook``. The round's own preference model likes the candidate; the hook refuses it.
And a round refused by the pair-accuracy floor."""

import json
import random
import sys

import dagster as dg
import pytest
import yaml

from rs_pipeline.cli_rounds import print_table
from rs_pipeline.config import PolicyConfig, merge
from rs_pipeline.defs.runner import failure_messages, run_bootstrap, run_round
from rs_pipeline.evaluation import greedy_completions
from rs_pipeline.history import round_row
from rs_pipeline.modeling import load_policy
from rs_pipeline.steps.evaluation import split_prompts
from rs_pipeline.storage import AssetStore
from rs_pipeline.tasks import get_task
from tests.conftest import make_home

HOOK = ("def exact(prompts, completions):\n"
        "    return [float(c == p[:-1][::-1]) for p, c in zip(prompts, completions)]\n")


@pytest.fixture(scope="module")
def chat_policy(tmp_path_factory):
    """A tiny chat policy whose greedy answer is mostly right (30% of its pretraining answers
    carry rev8's bug, so its samples hold the bugged answer often enough to be kept)."""
    from rs_pipeline.testing_models import build_tiny_chat_policy

    task = get_task("rev8")
    cfg = PolicyConfig(pretrain_steps=150, pretrain_batch_size=64, pretrain_lr=3e-3, bug_rate=0.3)
    return build_tiny_chat_policy(tmp_path_factory.mktemp("gate_chat_policy"), task,
                                  task.prompts()[:4000], cfg, seed=0)


@pytest.fixture
def hook_on_path(tmp_path, monkeypatch):
    folder = tmp_path / "user_code"
    folder.mkdir()
    (folder / "exact_match_hook.py").write_text(HOOK)
    monkeypatch.syspath_prepend(str(folder))
    yield "exact_match_hook:exact"
    sys.modules.pop("exact_match_hook", None)


def _files(folder, prompts, label):
    """A prompts file and a judgements file with one (bugged, right) pair per prompt."""
    task = get_task("rev8")
    folder.mkdir(exist_ok=True)
    pfile, lfile = folder / "prompts.jsonl", folder / "labels.jsonl"
    pfile.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in prompts))
    lfile.write_text("".join(json.dumps({
        "prompt": p, "completion_a": task.bugged_answer(p), "completion_b": task.answer(p),
        "hp": label(p)}) + "\n" for p in label_prompts(prompts)))
    return pfile, lfile


def label_prompts(prompts):
    task = get_task("rev8")
    return [p for p in prompts if task.bugged_answer(p) != task.answer(p)]


def _settings(chat_policy, pfile, lfile, **gate):
    return {
        "seed": 0,
        "task": {"name": "prompts_file", "prompts_path": str(pfile), "eval_size": 32,
                 "gate_size": 64, "round_size": 96},
        "policy": {"base_path": str(chat_policy)},
        "generation": {"n": 4, "batch_prompts": 96, "max_new_tokens": 12},
        "annotator": {"kind": "file", "path": str(lfile)},
        "preference": {"seed_labels_path": str(lfile), "seed_epochs": 2.0, "pairs_per_round": 80,
                       "replay_pairs": 0, "batch_size": 32, "heldout_fraction": 0.25},
        "sft": {"epochs": 2, "learning_rate": 3e-3, "batch_size": 16},
        "gate": gate,
    }


def _round(home_dir, monkeypatch, settings):
    home = make_home(home_dir, monkeypatch, settings)
    instance = dg.DagsterInstance.get()
    boot = run_bootstrap(instance)
    assert boot.success, failure_messages(instance, boot)
    key, result = run_round(instance)
    return home, AssetStore(str(home / "assets")), key, result


@pytest.mark.slow
def test_an_exact_match_hook_refuses_a_round_the_preference_model_liked(
        chat_policy, hook_on_path, tmp_path, monkeypatch, capsys):
    prompts = get_task("rev8").prompts()[1000:1400]
    # every judgement prefers the bugged answer: the preference model learns to pick it
    pfile, lfile = _files(tmp_path, prompts, lambda p: 1.0)
    home, store, key, result = _round(tmp_path / "home", monkeypatch,
                                      _settings(chat_policy, pfile, lfile, hook=hook_on_path,
                                                min_pair_acc=0.0))  # the hook's refusal alone
    assert not result.success  # the blocking gate check failed: no promotion
    ev = store.read_record("round_eval", key)
    d = ev.decision
    assert (d.judge, d.judge_id, d.metric) == ("hook", "exact_match_hook:exact", "hook_mean")
    assert d.judge_note == "auto: no verifier; gate.hook is set"
    assert not d.promoted and d.regressed and d.candidate < d.champion - 0.01
    assert f"regression: gate hook hook_mean {d.candidate:.4f} < champion {d.champion:.4f}" \
        in d.reason
    # the hook's numbers are the candidate's and champion's greedy exact match, recomputed here
    gate_prompts = split_prompts(store.read_table("eval_prompts"), "gate")
    for rec, value in ((store.read_record("policy_checkpoint", key), d.candidate),
                       (store.read_record("sampling_policy", key).checkpoint, d.champion)):
        model, tok = load_policy(home / "assets" / rec.path)
        comps = greedy_completions(model, tok, gate_prompts, 12)
        assert value == sum(c == p[:-1][::-1] for p, c in zip(gate_prompts, comps)) / 64
    # ... while the round's own preference model scored the candidate's greedy answers higher
    assert ev.candidate.gate.greedy_mean_reward > ev.champion.gate.greedy_mean_reward
    assert ev.candidate.gate.greedy_acc is None  # no verifier inside the pipeline
    pm = store.read_record("preference_model", key)
    assert d.pair_acc_floor.value == pm.pair_acc and d.pair_acc_floor.passed
    print(f"hook scenario: {d.summary()}; round preference model pair acc {pm.pair_acc}")
    row = round_row(store, key)
    assert row.state == "refused" and row.gate_judge == "hook"
    capsys.readouterr()
    print_table([row])
    table = capsys.readouterr().out
    cell = d.summary()
    assert cell == f"hook {f'{d.candidate:.3f}'.lstrip('0')}/{f'{d.champion:.3f}'.lstrip('0')}"
    assert cell in table and "-/-" not in table
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()
              if not e.check_name.startswith("monitor_")}  # monitors: tests/test_monitors.py
    assert checks == {"no_regression_vs_champion": False, "no_reward_hacking": True,
                      "preference_model_pair_accuracy": True}
    mat = dg.DagsterInstance.get().get_latest_materialization_event(dg.AssetKey("round_eval"))
    meta = mat.asset_materialization.metadata
    assert meta["gate"].value == cell and meta["gate_judge"].value == "hook"
    assert meta["gate/judge_candidate"].value == pytest.approx(d.candidate)
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{home / 'mlflow.db'}")
    exp = client.get_experiment_by_name("rs_pipeline")
    run = client.search_runs([exp.experiment_id], f"tags.round = '{key}'")[0]
    assert run.data.metrics["gate/judge_candidate"] == pytest.approx(d.candidate)
    assert run.data.metrics["gate/judge_champion"] == pytest.approx(d.champion)
    assert run.data.metrics["gate/pair_acc_floor_ok"] == 1.0
    assert run.data.tags["gate/judge"] == "hook"


@pytest.mark.slow
def test_a_round_whose_preference_model_ranks_pairs_at_chance_is_refused_by_the_floor(
        chat_policy, tmp_path, monkeypatch):
    prompts = get_task("rev8").prompts()[1000:1400]
    # judgements drawn at random: no preference model learns them, held-out accuracy ~0.5.
    # They are about other prompts than the policy's, so no round pair is labelled and the
    # round keeps the seed model (its pair accuracy on 200 held-out pairs is the one judged).
    others = get_task("rev8").prompts()[2000:2800]
    rng = random.Random(0)
    labels = {p: float(rng.random() < 0.5) for p in others}
    pfile, _ = _files(tmp_path, prompts, lambda p: 1.0)
    _, lfile = _files(tmp_path / "random", others, labels.__getitem__)
    settings = _settings(chat_policy, pfile, lfile)
    settings = merge(settings, {"sft": {"learning_rate": 1e-4, "epochs": 1}})
    home, store, key, result = _round(tmp_path / "home", monkeypatch, settings)
    assert not result.success
    d = store.read_record("round_eval", key).decision
    pm = store.read_record("preference_model", key)
    assert pm.skipped_reason and pm.pair_acc is not None and pm.pair_acc < 0.6
    assert d.judge == "seed_preference" and "fell back to the seed preference model" in \
        d.judge_note
    floor = d.pair_acc_floor
    assert (floor.value, floor.bar, floor.passed) == (pm.pair_acc, 0.6, False)
    assert not d.promoted and (f"held-out pair accuracy {pm.pair_acc:.4f} < floor "
                               "gate.min_pair_acc 0.6") in d.reason
    assert f"pairs {f'{pm.pair_acc:.3f}'.lstrip('0')}<.600" in round_row(store, key).gate_summary
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks["preference_model_pair_accuracy"] is False
    assert yaml.safe_load((home / "rs_pipeline.yaml").read_text())["gate"] == {}
