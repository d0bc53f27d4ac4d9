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


def test_top_vs_other_puts_each_prompts_favourite_in_its_first_pair():
    pids = ["a"] * 4 + ["b"] * 3
    comps = ["x", "y", "z", "y", "m", "n", "o"]
    scores = [0.1, 0.9, 0.5, 0.9, 2.0, -1.0, 0.0]
    pairs = distinct_pairs(pids, comps, n_pairs=2, seed=0, scores=scores)
    firsts = {pids[i]: {i, j} for i, j in pairs}
    assert 1 in firsts["a"] and 4 in firsts["b"]  # y (first row of y) and m are the favourites
    for seed in range(5):
        assert all(1 in {i, j} or 4 in {i, j}
                   for i, j in distinct_pairs(pids, comps, 2, seed=seed, scores=scores))
