from rs_pipeline.pairs import active_pairs, distinct_pairs


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


# Three prompts with heads' rewards by hand (rows x 3 heads). Prompt a: four distinct
# completions (row 4 repeats row 0's text: only its first row counts); b and c: one pair each;
# d: a single distinct completion (no pair).
ACTIVE_PIDS = ["a"] * 5 + ["b"] * 2 + ["c"] * 2 + ["d"]
ACTIVE_COMPS = ["x", "y", "z", "w", "x", "p", "q", "m", "n", "s"]
ACTIVE_HEADS = [[1, 1, 1], [0.4, 1.6, 1.0], [0, 0.2, 0], [-5, -4, -5], [9, 9, 9],
                [0, 0, 0], [0, 1, 2], [2, 2, 2], [1, 1.3, 1], [0, 0, 0]]
# std over heads of r_a - r_b: a (0,1) 0.60, (1,2) 0.50, (0,2) 0.12 (w is outside the top 3);
# b (5,6) 1.00; c (7,8) 0.17


def _active(n_pairs, seed=0, top_k=3, penalty=0.0, heads=ACTIVE_HEADS):
    out = active_pairs(ACTIVE_PIDS, ACTIVE_COMPS, n_pairs, seed, heads, top_k, penalty)
    return [frozenset(p) for p in out]


def test_active_pairs_spend_the_budget_on_the_least_sure_pairs_one_per_prompt_first():
    assert _active(2) == [{5, 6}, {0, 1}]  # b and a, the two most uncertain prompts' first pairs
    assert _active(3) == [{5, 6}, {0, 1}, {7, 8}]  # every prompt once before any second pair
    assert _active(4) == [{5, 6}, {0, 1}, {7, 8}, {1, 2}]
    assert _active(100) == [{5, 6}, {0, 1}, {7, 8}, {1, 2}, {0, 2}]  # top 3 of a: 3 pairs
    assert {3} & set().union(*_active(100)) == set()
    assert {0, 3} in _active(100, top_k=4)  # with w in a's top 4, (x, w) is unsure (0.58)
    # deterministic with the seed; another seed may only flip a pair's (a, b) order
    picks = active_pairs(ACTIVE_PIDS, ACTIVE_COMPS, 4, 7, ACTIVE_HEADS, 3)
    assert picks == active_pairs(ACTIVE_PIDS, ACTIVE_COMPS, 4, 7, ACTIVE_HEADS, 3)
    assert all(ACTIVE_COMPS[i] != ACTIVE_COMPS[j] and ACTIVE_PIDS[i] == ACTIVE_PIDS[j]
               for i, j in picks)
    assert {frozenset(p) for s in range(5) for p in active_pairs(
        ACTIVE_PIDS, ACTIVE_COMPS, 4, s, ACTIVE_HEADS, 3)} == set(_active(4))


def test_active_candidates_are_ranked_by_the_conservative_score():
    # top 2 by mean: x (1.0) and y (1.0); with penalty 2, y (1 - 2*0.6) falls below z
    assert _active(1, top_k=2)[0] == {5, 6} and {0, 1} in _active(100, top_k=2)
    assert {0, 2} in _active(100, top_k=2, penalty=2.0)
    assert {0, 1} not in _active(100, top_k=2, penalty=2.0)


def test_active_with_one_head_takes_the_smallest_margins():
    one = [[h[0]] for h in ACTIVE_HEADS]  # a: x 1, y 0.4, z 0; b: 0 vs 0; c: 2 vs 1
    assert _active(3, heads=one) == [{5, 6}, {1, 2}, {7, 8}]  # margins 0, 0.4, 1
    assert _active(100, heads=one) == [{5, 6}, {1, 2}, {7, 8}, {0, 1}, {0, 2}]
