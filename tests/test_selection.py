import pandas as pd

from rs_pipeline.selection import dpo_pairs, select_best, selection_scores


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
