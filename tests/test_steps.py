"""A round through the core steps alone (no Dagster, no MLflow): what each step decides."""

import dataclasses

import pytest

from rs_pipeline import preflight
from rs_pipeline.config import LoraConfig, config_from_dict, merge
from rs_pipeline.context import RunContext
from rs_pipeline.ids import sample_seed, table_version
from rs_pipeline.preference import score
from rs_pipeline.steps import bootstrap, evaluation, judging, sampling, selection, training
from tests.conftest import TINY


@pytest.fixture(scope="module")
def steps(tiny_policy, tmp_path_factory):
    """Every step once, in loop order, on a tiny rev8 setting over the shared tiny policy."""
    home = tmp_path_factory.mktemp("steps")
    ctx = RunContext(config_from_dict(merge(TINY, {"policy": {"base_path": str(tiny_policy)}})),
                     home)
    out = {"ctx": ctx}
    out["pool"], out["held"], out["stats"] = bootstrap.prompt_sets(ctx)
    out["base"], base_metrics = bootstrap.base_policy(ctx, out["pool"])
    out["base_reused"] = bool(base_metrics["base/reused"])
    out["seed_table"], _ = bootstrap.seed_preferences(ctx, out["pool"])
    out["rm0"], out["rm0_metrics"] = judging.train_seed_preference(ctx, out["base"],
                                                                   out["seed_table"])
    out["prompts"] = sampling.round_prompts(ctx, out["pool"], "r0001")
    out["gens"], out["gen_metrics"] = sampling.generations(ctx, out["prompts"], out["base"],
                                                           "r0001")
    out["labels"], _ = judging.label_pairs(ctx, out["gens"], out["rm0"], "r0001")
    out["rm1"], out["rm1_metrics"] = judging.refresh_preference(ctx, out["labels"], out["rm0"],
                                                                [], "r0001")
    out["scores"], _ = judging.score_generations(ctx, out["gens"], out["rm1"])
    out["sft"], out["sft_metrics"] = selection.sft_dataset(ctx, out["scores"])
    out["dpo"], _ = selection.dpo_dataset(ctx, out["scores"])
    out["cand"], _ = training.train_candidate(ctx, out["sft"], out["base"], "r0001")
    out["eval"], out["eval_metrics"] = evaluation.evaluate_round(
        ctx, out["cand"], out["base"], out["rm1"], out["held"], "r0001")
    return out


def test_prompt_sets_hold_out_eval_and_gate_and_rounds_draw_from_the_pool(steps):
    pool, held, ctx = steps["pool"], steps["held"], steps["ctx"]
    assert steps["stats"] == {"input_prompts": 6561, "duplicates": 0, "pool": 6561 - 128,
                              "eval": 64, "gate": 64}
    assert held.column("split").to_pylist().count("gate") == 64
    assert set(pool.column("prompt_id").to_pylist()).isdisjoint(held.column("prompt_id").to_pylist())
    p1 = steps["prompts"]
    assert p1.num_rows == 96 and set(p1.column("round").to_pylist()) == {"r0001"}
    assert p1.equals(sampling.round_prompts(ctx, pool, "r0001"))  # seeded by (seed, round)
    p2 = sampling.round_prompts(ctx, pool, "r0002")
    assert p2.column("prompt_id").to_pylist() != p1.column("prompt_id").to_pylist()


def test_base_policy_is_the_users_folder_copied_once_by_content(steps):
    base, ctx = steps["base"], steps["ctx"]
    assert base.source == ctx.settings.policy.base_path and base.round is None
    again, metrics = bootstrap.base_policy(ctx, steps["pool"])
    assert metrics["base/reused"] == 1 and again == base and not steps["base_reused"]


def test_seed_pairs_and_round_pairs_share_one_held_out_rule_and_train_on_train(steps):
    seed, labels = steps["seed_table"], steps["labels"]
    for table in (seed, labels):
        split = table.column("split").to_pylist()
        assert set(split) == {"train", "heldout"}
    assert steps["rm0"].train_pairs == seed.column("split").to_pylist().count("train")
    rm1 = steps["rm1"]
    assert rm1.parent_id == steps["rm0"].id and rm1.round == "r0001" and rm1.replay_pairs == 0
    assert rm1.train_pairs == labels.column("split").to_pylist().count("train")
    assert rm1.pair_acc_verifier is not None  # rev8 has a verifier: true pair accuracy too
    d = labels.to_pydict()
    assert all(a != b for a, b in zip(d["completion_a"], d["completion_b"]))
    assert set(d["hp"]) <= {0.0, 0.5, 1.0} and labels.num_rows == 80


def test_replay_draws_earlier_train_pairs_up_to_the_budget(steps):
    ctx, labels = steps["ctx"], steps["labels"]
    rm2, metrics = judging.refresh_preference(ctx, labels, steps["rm1"], [labels], "r0002")
    n_train = labels.column("split").to_pylist().count("train")
    assert rm2.replay_pairs == min(40, n_train) == metrics["pref/replay_pairs"]
    assert rm2.train_pairs == n_train and rm2.parent_id == steps["rm1"].id


def test_generations_carry_their_seeds_and_lineage(steps):
    gens = steps["gens"]
    assert gens.num_rows == 96 * 4 and steps["gen_metrics"]["gen/rows"] == 384
    row = gens.slice(5, 1).to_pylist()[0]
    assert row["seed"] == sample_seed(0, "r0001", row["prompt_id"], row["sample_index"])
    assert row["policy_id"] == steps["base"].id and row["max_new_tokens"] == 9


def test_selection_keeps_one_best_per_prompt_and_training_records_its_data(steps):
    sft, scores = steps["sft"], steps["scores"]
    assert sft.num_rows == 96 and len(set(sft.column("prompt_id").to_pylist())) == 96
    best = scores.to_pandas().groupby("prompt_id")["selection_score"].max()
    kept = sft.to_pandas().set_index("prompt_id")["selection_score"]
    assert (kept == best.loc[kept.index]).all()
    precision = steps["sft_metrics"]["select/kept_precision"]
    assert precision == pytest.approx(sum(sft.column("verifier_score").to_pylist()) / 96)
    dpo = steps["dpo"].to_pandas()
    assert (dpo["margin"] >= 0.5).all() and (dpo["chosen"] != dpo["rejected"]).all()
    cand = steps["cand"]
    assert cand.parent_id == steps["base"].id and cand.sft_dataset_version == table_version(sft)


def test_evaluation_compares_candidate_and_champion_and_promotion_follows_the_gate(steps):
    ev, metrics = steps["eval"], steps["eval_metrics"]
    assert ev.candidate_id == steps["cand"].id and ev.champion_id == steps["base"].id
    assert ev.candidate.eval.n_prompts == 64 and ev.candidate.gate.n_prompts == 64
    assert ev.decision.metric == "greedy_acc"
    assert ev.decision.candidate == ev.candidate.gate.greedy_acc
    assert metrics["gate/promoted"] == int(ev.decision.promoted)
    passed = dataclasses.replace(ev, decision=dataclasses.replace(ev.decision, promoted=True))
    refused = dataclasses.replace(ev, decision=dataclasses.replace(ev.decision, promoted=False))
    assert evaluation.promote(passed, steps["cand"]).previous_champion_id == steps["base"].id
    with pytest.raises(ValueError, match="was not passed by the gate"):
        evaluation.promote(refused, steps["cand"])


def test_seed_preference_model_from_minilm_with_lora_is_recorded_and_loads(tiny_policy, minilm_base,
                                                                           tmp_path):
    """A BERT-style base (``preference.base_path``) trained through LoRA adapters: preflight
    passes, the record says how, and the merged checkpoint loads under its content id."""
    settings = merge(TINY, {"policy": {"base_path": str(tiny_policy)}, "preference": {
        "base_path": str(minilm_base), "seed_pairs": 64, "seed_epochs": 1.0,
        "seed_learning_rate": 2e-3, "lora": {"enabled": True, "r": 4}}})
    ctx = RunContext(config_from_dict(settings), tmp_path)
    preflight.require(ctx)
    pool, _, _ = bootstrap.prompt_sets(ctx)
    base, _ = bootstrap.base_policy(ctx, pool)
    seed_table, _ = bootstrap.seed_preferences(ctx, pool)
    rm, metrics = judging.train_seed_preference(ctx, base, seed_table)
    assert rm.lora.r == 4 and rm.lora.target_modules == ["query", "value"]
    assert 0 <= metrics["seed_pref/pair_acc"] <= 1 and rm.train_pairs > 0
    model, tok = ctx.load_preference(rm)  # verifies the merged weights' content id
    assert type(model).__name__ == "BertForSequenceClassification"
    rewards = score(model, tok, ["0120=", "0120="], ["0210", "2100"])
    assert len(rewards) == 2 and rewards[0] != rewards[1]


def test_sft_with_lora_records_it_and_saves_a_merged_plain_checkpoint(steps, tmp_path):
    ctx = steps["ctx"]
    sft = dataclasses.replace(ctx.settings.sft, lora=LoraConfig(enabled=True, r=2))
    lora_ctx = RunContext(dataclasses.replace(ctx.settings, sft=sft), ctx.home)
    cand, metrics = training.train_candidate(lora_ctx, steps["sft"], steps["base"], "r0001")
    assert cand.lora.target_modules == ["c_attn"] and cand.lora.r == 2
    assert metrics["sft/lora_trainable_params"] == cand.lora.trainable_params
    assert steps["cand"].lora is None and cand.id not in (steps["cand"].id, steps["base"].id)
    assert cand.parent_id == steps["base"].id
    folder = lora_ctx.checkpoints.local_dir(cand.path)
    assert not (folder / "adapter_config.json").exists()
    model, _ = lora_ctx.load_policy(cand)  # a plain causal LM, verified against its content id
    assert type(model).__name__ == "GPT2LMHeadModel"


def test_round_two_reuses_the_champions_decoded_evaluation(steps, monkeypatch):
    """Round 2's champion is round 1's candidate: its completions are not decoded again (no
    policy is loaded), and its metrics are round 1's candidate metrics (same reward model here).
    Without the stored completions everything is decoded again, with the same numbers."""
    from rs_pipeline.context import RunContext as Ctx

    ctx, ev1 = steps["ctx"], steps["eval"]
    loads = []
    real_load = Ctx.load_policy
    monkeypatch.setattr(Ctx, "load_policy",
                        lambda self, rec: loads.append(rec.id) or real_load(self, rec))
    ev2, _ = evaluation.evaluate_round(ctx, steps["base"], steps["cand"], steps["rm1"],
                                       steps["held"], "r0002")
    assert loads == []  # both policies were decoded in round 1
    assert ev2.champion == ev1.candidate and ev2.candidate == ev1.champion
    stored = f"{ctx.store.root}/eval_completions"
    assert len(ctx.store.fs.ls(stored)) == 2  # one file per policy
    ctx.store.fs.rm(stored, recursive=True)  # without them: decoded again
    ev3, _ = evaluation.evaluate_round(ctx, steps["base"], steps["cand"], steps["rm1"],
                                       steps["held"], "r0002")
    assert sorted(loads) == sorted([steps["base"].id, steps["cand"].id])
    assert ev3.champion.eval.sample_acc == ev2.champion.eval.sample_acc
    assert ev3.champion.gate.greedy_acc == ev2.champion.gate.greedy_acc
    assert ev3.champion.eval.mean_reward == pytest.approx(ev2.champion.eval.mean_reward, abs=1e-6)


def test_training_methods_record_their_data_and_dpo_without_pairs_falls_back(steps):
    ctx, sft, base = steps["ctx"], steps["sft"], steps["base"]
    assert steps["cand"].method == "sft" and steps["cand"].dpo_pairs_version is None

    def with_method(method):
        s = ctx.settings
        return dataclasses.replace(ctx, settings=dataclasses.replace(
            s, sft=dataclasses.replace(s.sft, method=method),
            selection=dataclasses.replace(s.selection, dpo_min_margin=0.0)))

    pairs, _ = selection.dpo_dataset(with_method("dpo"), steps["scores"])
    assert pairs.num_rows > 0

    cand, metrics = training.train_candidate(with_method("dpo"), sft, base, "r0001", None, pairs)
    assert (cand.method, cand.dpo_pairs_version, cand.dpo_pairs, cand.sft_dataset_version) == (
        "dpo", table_version(pairs), pairs.num_rows, None)
    assert cand.parent_id == base.id and cand.id not in (base.id, steps["cand"].id)
    assert metrics["dpo/steps"] >= 1 and "sft/steps" not in metrics
    both, metrics = training.train_candidate(with_method("sft+dpo"), sft, base, "r0001", None,
                                             pairs)
    assert both.sft_dataset_version == table_version(sft) and both.dpo_pairs == pairs.num_rows
    assert metrics["sft/steps"] >= 1 and metrics["dpo/steps"] >= 1
    none, _ = training.train_candidate(with_method("dpo"), sft, base, "r0001", None,
                                       pairs.slice(0, 0))
    assert (none.method, none.id, none.dpo_pairs_version) == ("sft", steps["cand"].id, None)
    assert "no DPO pairs this round" in none.note
