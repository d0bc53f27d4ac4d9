from rs_pipeline.pairs import distinct_pairs


def test_pairs_are_distinct_completions_of_one_prompt_spread_over_prompts():
    pids = ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    comps = ["x", "x", "y", "z", "q", "q", "q", "q", "m", "n", "m", "o"]
    pairs = distinct_pairs(pids, comps, n_pairs=100, seed=0)
    assert all(pids[i] == pids[j] and comps[i] != comps[j] for i, j in pairs)
    # a has 3 distinct (3 pairs), b has 1 (none), c has 3 (3 pairs)
    assert len(pairs) == 6 and len({frozenset(p) for p in pairs}) == 6
    first_two = distinct_pairs(pids, comps, n_pairs=2, seed=0)
    assert {pids[i] for i, _ in first_two} == {"a", "c"}  # one per prompt before seconds
    assert distinct_pairs(pids, comps, 4, seed=1) == distinct_pairs(pids, comps, 4, seed=1)
