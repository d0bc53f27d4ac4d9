import types

import pandas as pd
import pyarrow as pa
import pytest
import torch

from rs_pipeline.config import PipelineConfig, SelectionConfig, config_from_dict
from rs_pipeline.errors import InputError
from rs_pipeline.ids import table_version
from rs_pipeline.schemas import make_table
from rs_pipeline.selection import dpo_pairs, select_best, selection_scores
from rs_pipeline.selection_rules import kept_percentile, select
from rs_pipeline.steps import selection as selection_step


def _scores(rows):
    df = pd.DataFrame(rows, columns=["prompt_id", "sample_index", "completion", "selection_score"])
    df["prompt"] = df["prompt_id"] + "?"
    df["round"], df["policy_id"], df["reward_model_id"] = "r0001", "pol-x", "rm-x"
    return df


def test_ties_go_to_the_lowest_sample_index_and_no_dpo_pair_for_a_tie():
    df = _scores([("a", 2, "x", 1.0), ("a", 0, "y", 1.0), ("a", 1, "z", 1.0)])
    best, stats = select_best(df, None)
    assert best["completion"].tolist() == ["y"] and stats["kept"] == 1
    assert dpo_pairs(df, min_margin=0.0).empty


def test_threshold_drops_every_prompt_when_all_are_below():
    df = _scores([("a", 0, "x", 0.1), ("b", 0, "y", 0.2), ("b", 1, "w", -1.0)])
    best, stats = select_best(df, threshold=0.5)
    assert best.empty and stats == {"prompts": 2, "kept": 0, "dropped_below_threshold": 2,
                                    "duplicate_completions": 0}
    best, _ = select_best(df, threshold=0.15)
    assert best[["prompt_id", "completion"]].values.tolist() == [["b", "y"]]


def test_duplicate_completions_and_prompts_collapse_deterministically():
    df = _scores([("a", 3, "x", 0.9), ("a", 1, "x", 0.9), ("a", 2, "y", 0.1),
                  ("b", 0, "q", 0.5), ("b", 1, "q", 0.5)])
    best, stats = select_best(df, None)
    assert best[["prompt_id", "completion", "sample_index"]].values.tolist() == [
        ["a", "x", 1], ["b", "q", 0]]
    assert stats["duplicate_completions"] == 2
    pairs = dpo_pairs(df, min_margin=0.5)
    assert pairs[["prompt_id", "chosen", "rejected"]].values.tolist() == [["a", "x", "y"]]
    assert pairs["margin"].round(6).tolist() == [0.8]
    # b has one distinct completion: no pair. A margin above 0.8 leaves none.
    assert dpo_pairs(df, min_margin=0.81).empty
    shuffled = df.sample(frac=1.0, random_state=3)
    assert select_best(shuffled, None)[0]["sample_index"].tolist() == [1, 0]


def test_selectors():
    reward, ver = pd.Series([0.2, 3.0]), pd.Series([1.0, 0.0])
    assert selection_scores(reward, ver, "preference", 0.5).tolist() == [0.2, 3.0]
    assert selection_scores(reward, ver, "verifier", 0.5).tolist() == [1.0, 0.0]
    assert selection_scores(reward, ver, "mix", 0.25).round(6).tolist() == [0.4, 2.25]


def test_uncertainty_penalty_prefers_a_sure_completion_over_a_spread_out_one():
    df = _scores([("a", 0, "bold", 0.0), ("a", 1, "sure", 0.0)])
    reward, spread = pd.Series([1.0, 0.9]), pd.Series([0.5, 0.0])
    verifier = pd.Series([None, None], dtype="float64")
    for penalty, winner in ((0.0, "bold"), (1.0, "sure")):
        df["selection_score"] = selection_scores(reward, verifier, "preference", 0.5, spread,
                                                 penalty)
        assert select_best(df, None)[0]["completion"].tolist() == [winner]
    assert selection_scores(reward, verifier, "preference", 0.5, spread, 1.0).tolist() == [0.5, 0.9]
    mixed = selection_scores(reward, pd.Series([1.0, 0.0]), "mix", 0.25, spread, 1.0)
    assert mixed.round(6).tolist() == [0.625, 0.675]  # 0.75 * (mean - spread) + 0.25 * verifier


# --- selection rules (rs_pipeline.selection_rules) and the best-ever pool ---------------------



def _kept(df, round_key="r0001", seed=0, **settings):
    kept, stats = select(df, SelectionConfig(**settings), round_key, seed)
    return kept[["prompt_id", "completion"]].values.tolist(), stats


def _bests(scores):
    """One prompt per score (prompt p0 scores scores[0], ...), each with a worse second sample."""
    return _scores([row for i, s in enumerate(scores)
                    for row in ((f"p{i}", 0, "hi", s), (f"p{i}", 1, "lo", s - 10))])


def test_top_k_keeps_the_k_best_distinct_completions_per_prompt():
    df = _scores([("a", 0, "x", 0.9), ("a", 1, "y", 0.5), ("a", 2, "x", 0.9), ("a", 3, "z", 0.1),
                  ("b", 0, "q", 0.3), ("b", 1, "w", 0.8)])
    kept, stats = _kept(df, rule="top_k", top_k=2)
    assert kept == [["a", "x"], ["a", "y"], ["b", "w"], ["b", "q"]]
    assert stats["kept"] == 4 and stats["duplicate_completions"] == 1
    kept, stats = _kept(df, rule="top_k", top_k=3, threshold=0.2)  # threshold per kept row
    assert kept == [["a", "x"], ["a", "y"], ["b", "w"], ["b", "q"]]
    assert stats["dropped_below_threshold"] == 1  # a's z


def test_percentile_keeps_the_top_share_of_prompts_and_every_tie_at_the_cut():
    df = _bests([5.0, 4.0, 4.0, 2.0, 1.0])
    kept, stats = _kept(df, percentile=20)  # ceil(1) = 1 prompt: cut 5
    assert kept == [["p0", "hi"]] and stats["dropped_by_percentile"] == 4
    kept, stats = _kept(df, percentile=40)  # 2 prompts -> cut 4, and the tie at 4 stays
    assert kept == [["p0", "hi"], ["p1", "hi"], ["p2", "hi"]]
    assert stats["dropped_by_percentile"] == 2 and stats["percentile"] == 40
    assert _kept(df, percentile=50)[0] == kept  # ceil(2.5) = 3 prompts, cut still 4
    assert len(_kept(df, percentile=100)[0]) == 5
    # the percentile judges a prompt by its best score, whichever rule picks its rows
    kept, _ = _kept(df, percentile=40, rule="top_k", top_k=2)
    assert kept == [[p, c] for p in ("p0", "p1", "p2") for c in ("hi", "lo")]


def test_rising_percentile_keeps_fewer_prompts_in_later_rounds():
    df = _bests([5.0, 4.0, 3.0, 2.0])
    rising = {"percentile": 100, "rising_percentile_step": 25}
    assert kept_percentile(SelectionConfig(**rising), "r0001") == 100
    assert kept_percentile(SelectionConfig(**rising), "r0003") == 50
    assert [p for p, _ in _kept(df, "r0001", **rising)[0]] == ["p0", "p1", "p2", "p3"]
    kept, stats = _kept(df, "r0003", **rising)
    assert [p for p, _ in kept] == ["p0", "p1"] and stats["dropped_by_percentile"] == 2
    # capped: never below min_percentile; without a percentile the rise starts from 100
    steep = SelectionConfig(rising_percentile_step=60, min_percentile=25)
    assert kept_percentile(steep, "r0003") == 25
    assert select(df, steep, "r0003")[0]["prompt_id"].tolist() == ["p0"]  # ceil(25% of 4)
    assert kept_percentile(SelectionConfig(), "r0009") is None


def test_per_prompt_normalisation_changes_which_prompts_survive_a_percentile():
    # a: best 10 but its samples are all alike (z 1.22); b: best 1 far above its others (z 1.41)
    df = _scores([("a", 0, "x", 10.0), ("a", 1, "y", 9.9), ("a", 2, "z", 9.8),
                  ("b", 0, "x", 1.0), ("b", 1, "y", -5.0), ("b", 2, "z", -5.0),
                  ("c", 0, "x", 0.0), ("c", 1, "y", 0.0)])  # all alike: z 0
    assert _kept(df, percentile=33)[0] == [["a", "x"]]
    kept, stats = select(df, SelectionConfig(percentile=33, normalize="prompt"), "r0001")
    assert kept[["prompt_id", "completion"]].values.tolist() == [["b", "x"]]
    assert kept["selection_score"].round(4).tolist() == [1.4142]  # the score that was ranked
    # normalisation alone never changes a prompt's argmax
    assert _kept(df, normalize="prompt")[0] == _kept(df)[0]


def test_length_penalty_flips_a_choice():
    df = _scores([("a", 0, "much longer answer", 1.2), ("a", 1, "short", 1.0)])
    assert _kept(df)[0] == [["a", "much longer answer"]]
    kept, stats = _kept(df, length_penalty=0.1)  # 1.2 - 1.8 < 1.0 - 0.5
    assert kept == [["a", "short"]] and stats["mean_length"] == 5.0


def test_random_is_seeded_blind_to_scores_and_differs_from_argmax():
    df = _scores([(f"p{i}", j, f"c{j}", float(j)) for i in range(30) for j in range(4)])
    argmax = _kept(df)[0]
    assert {c for _, c in argmax} == {"c3"}
    first, again = _kept(df, rule="random")[0], _kept(df, rule="random")[0]
    assert first == again and len(first) == 30
    assert sum(a != b for a, b in zip(first, argmax)) > 10
    assert len({c for _, c in first}) == 4  # every position gets picked somewhere
    assert _kept(df, seed=1, rule="random")[0] != first
    assert _kept(df, "r0002", rule="random")[0] != first
    shuffled = df.sample(frac=1.0, random_state=5)
    assert _kept(shuffled, rule="random")[0] == first
    rescored = df.assign(selection_score=-df["selection_score"])  # scores do not move the draw
    assert _kept(rescored, rule="random")[0] == first


def test_default_rule_is_select_best_exactly():
    df = _scores([("a", 3, "x", 0.9), ("a", 1, "x", 0.9), ("a", 2, "y", 0.1),
                  ("b", 0, "q", 0.5), ("b", 1, "q", 0.5), ("c", 2, "u", 0.2), ("c", 0, "v", 0.2)])
    df["verifier_score"] = [1.0, 1.0, 0.0, 0.0, 0.0, 1.0, None]
    for threshold in (None, 0.3):
        old, old_stats = select_best(df, threshold)
        new, stats = select(df, SelectionConfig(threshold=threshold), "r0001")
        pd.testing.assert_frame_equal(new, old)
        assert {k: stats[k] for k in old_stats} == old_stats
        assert stats["from_pool"] == 0 and stats["dropped_by_percentile"] == 0
    assert stats["kept_precision"] == 0.5 and stats["mean_length"] == 1.0


def test_selection_settings_are_checked_when_loaded():
    with pytest.raises(InputError) as err:
        config_from_dict({"selection": {"rule": "best", "percentile": 0, "top_k": 0,
                                        "normalize": "z"}})
    for name in ("selection.rule", "selection.percentile", "selection.top_k",
                 "selection.normalize"):
        assert name in str(err.value)


# best-ever pool through the step, with a stand-in preference model (a score per completion)

def _scores_table(round_key, rows):
    """``scores`` rows of ``round_key``: (prompt_id, sample_index, completion, reward)."""
    return make_table("scores", {
        "generation_id": [f"g-{round_key}-{p}-{i}" for p, i, _, _ in rows],
        "round": [round_key] * len(rows), "prompt_id": [p for p, *_ in rows],
        "prompt": [p + "?" for p, *_ in rows], "sample_index": [i for _, i, _, _ in rows],
        "completion": [c for _, _, c, _ in rows], "policy_id": [f"pol-{round_key}"] * len(rows),
        "reward_model_id": [f"rm-{round_key}"] * len(rows), "reward": [r for *_, r in rows],
        "reward_spread": [0.0] * len(rows), "verifier_score": [1.0] * len(rows),
        "selection_score": [r for *_, r in rows]})


def _ctx(**selection):
    settings = PipelineConfig(selection=SelectionConfig(**selection))
    return types.SimpleNamespace(settings=settings, load_preference=lambda record: (None, None))


def test_best_ever_keeps_an_earlier_completion_the_current_model_prefers(monkeypatch):
    current = {"old-a": 5.0, "new-a1": 1.0, "new-a2": 2.0,   # a: the old one beats every new one
               "old-b": 0.5, "new-b1": 3.0,                  # b: a better new candidate
               "old-c": 0.0}                                 # c: only ever seen in round 1
    monkeypatch.setattr(selection_step, "score_heads", lambda model, tok, prompts, completions:
                        torch.tensor([[current[c]] for c in completions]))
    ctx = _ctx(selector="preference")
    r1, _ = selection_step.sft_dataset(ctx, _scores_table("r0001", [
        ("a", 0, "old-a", 9.0), ("b", 0, "old-b", 9.0), ("c", 0, "old-c", 9.0)]))
    r2_scores = _scores_table("r0002", [("a", 0, "new-a1", 1.0), ("a", 1, "new-a2", 2.0),
                                        ("b", 0, "new-b1", 3.0)])
    rm = types.SimpleNamespace(id="rm-r0002", path="unused")
    plain, _ = selection_step.sft_dataset(ctx, r2_scores, "r0002", [r1], rm)
    assert plain.column("completion").to_pylist() == ["new-a2", "new-b1"]  # best_ever off
    ctx = _ctx(selector="preference", best_ever=True)
    table, metrics = selection_step.sft_dataset(ctx, r2_scores, "r0002", [r1], rm)
    rows = {r["prompt_id"]: r for r in table.to_pylist()}
    assert {p: r["completion"] for p, r in rows.items()} == {"a": "old-a", "b": "new-b1",
                                                             "c": "old-c"}
    assert (rows["a"]["round"], rows["a"]["generation_id"], rows["a"]["policy_id"]) == (
        "r0001", "g-r0001-a-0", "pol-r0001")  # its origin
    assert rows["a"]["reward"] == 5.0 and rows["a"]["reward_model_id"] == "rm-r0002"  # rescored
    assert (rows["b"]["round"], rows["b"]["generation_id"]) == ("r0002", "g-r0002-b-0")
    assert metrics["select/from_pool"] == 2 and metrics["select/kept"] == 3
    # a round 3 pool holds both earlier tables; a row kept twice is one candidate, first origin
    table3, m3 = selection_step.sft_dataset(
        ctx, _scores_table("r0003", [("b", 0, "new-b1", 0.1)]), "r0003", [r1, table], rm)
    assert m3["select/duplicate_completions"] == 1 and m3["select/from_pool"] == 3
    assert table3.column("round").to_pylist() == ["r0001", "r0002", "r0001"]


def test_default_step_rows_are_the_old_rows():
    scores = _scores_table("r0001", [("a", 0, "x", 0.2), ("a", 1, "y", 0.7), ("a", 2, "y", 0.7),
                                     ("b", 0, "z", 0.1)])
    table, _ = selection_step.sft_dataset(_ctx(), scores)
    best, _ = select_best(scores.to_pandas(), None)
    old = make_table("sft_dataset", {c: best[c].tolist() for c in selection_step.SFT_COLUMNS})
    assert table_version(table) == table_version(old)
    assert isinstance(table, pa.Table) and table.column("completion").to_pylist() == ["y", "z"]
