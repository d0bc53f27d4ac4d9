"""Adaptive best-of-N (generation.waves): who stops, what is sampled, restarts, bad settings."""

import pytest

from rs_pipeline.config import config_from_dict, merge
from rs_pipeline.context import RunContext, require_settings
from rs_pipeline.errors import InputError
from rs_pipeline.ids import sample_seed
from rs_pipeline.modeling import preference_from_policy
from rs_pipeline.preference import score
from rs_pipeline.records import PreferenceCheckpoint
from rs_pipeline.steps import bootstrap, sampling
from rs_pipeline.waves import Scale, margin
from tests.conftest import TINY

ROUND = "r0001"


def _ctx(home, policy, **generation):
    return RunContext(config_from_dict(merge(TINY, {
        "policy": {"base_path": str(policy)}, "task": {"round_size": 24},
        "generation": {"n": 4, "stop_margin": None, "stop_coverage": None, **generation},
        "recovery": {"shard_prompts": 10}})), home)


@pytest.fixture(scope="module")
def world(tiny_policy, tmp_path_factory):
    """A 24-prompt round of the tiny policy, sampled plain (n=4), and an untrained preference
    model (the policy's body, a seeded new head: arbitrary but fixed scores)."""
    home = tmp_path_factory.mktemp("adaptive")
    ctx = _ctx(home, tiny_policy)
    pool, _, _ = bootstrap.prompt_sets(ctx)
    base, _ = bootstrap.base_policy(ctx, pool)
    model, tok = preference_from_policy(ctx.checkpoints.local_dir(base.path), seed=0)
    rm_id, rm_path = ctx.checkpoints.save(model, tok, "preference", "rm")
    prompts = sampling.round_prompts(ctx, pool, ROUND)
    plain, _ = sampling.generations(ctx, prompts, base, ROUND)
    return {"home": home, "policy": tiny_policy, "base": base, "prompts": prompts,
            "plain": plain, "rm": PreferenceCheckpoint(id=rm_id, path=rm_path),
            "scorer": (model, tok)}


def _adaptive(world, resume=None, **generation):
    ctx = _ctx(world["home"], world["policy"], **generation)
    return sampling.generations(ctx, world["prompts"], world["base"], ROUND, resume,
                                scorer=world["rm"])


def _first_wave(world):
    """The plain table, its first two samples per prompt and their standardised rewards per
    prompt, as the first wave of ``2,...`` sees them."""
    plain = world["plain"].to_pydict()
    first = [(p, c) for p, c, s in zip(plain["prompt"], plain["completion"],
                                       plain["sample_index"]) if s < 2]
    rewards = score(*world["scorer"], [p for p, _ in first], [c for _, c in first])
    scale = Scale.of([rewards[i:i + 2] for i in range(0, len(rewards), 2)])
    return plain, first, [scale.z(rewards[i:i + 2]) for i in range(0, len(rewards), 2)]


def _rows(table):
    return {(r["prompt_id"], r["sample_index"]): r for r in table.to_pylist()}


def test_default_is_plain_best_of_n_and_waves_without_stopping_reproduce_it(world):
    plain = world["plain"]
    d = plain.to_pydict()
    assert plain.num_rows == 24 * 4 and d["sample_index"][:4] == [0, 1, 2, 3]
    assert d["seed"][5] == sample_seed(0, ROUND, d["prompt_id"][5], 1)
    same, metrics = _adaptive(world, waves="1,1,2", stop_score=None)
    assert same.equals(plain)  # every row, byte for byte, in the same order
    assert [metrics[f"gen/wave{w}_samples"] for w in (1, 2, 3)] == [24, 24, 48]


def test_prompts_whose_best_passes_the_threshold_stop_and_samples_are_plains(world):
    plain, _, z = _first_wave(world)
    best = [max(v) for v in z]
    threshold = sorted(best)[len(best) // 2]  # about half the prompts stop after wave 1
    stops = {pid for pid, b in zip(plain["prompt_id"][::4], best) if b >= threshold}
    table, metrics = _adaptive(world, waves="2,2", stop_score=threshold)
    got = table.to_pydict()
    counts = {pid: got["prompt_id"].count(pid) for pid in plain["prompt_id"][::4]}
    assert {pid for pid, n in counts.items() if n == 2} == stops and 0 < len(stops) < 24
    assert all(n == 4 for pid, n in counts.items() if pid not in stops)
    assert metrics["gen/wave1_stopped"] == len(stops) == metrics["gen/stopped_prompts"]
    assert metrics["gen/rows"] == table.num_rows == 24 * 4 - 2 * len(stops)
    assert metrics["gen/wave2_prompts"] == 24 - len(stops)
    plain_rows = _rows(world["plain"])
    assert all(plain_rows[k] == r for k, r in _rows(table).items())  # a subset of plain's rows


def test_the_margin_rule_stops_prompts_whose_best_beats_their_runner_up(world):
    """``stop_margin``: a prompt stops after wave 1 when its best beats the best other distinct
    completion by the margin; two copies of one completion tie exactly (margin 0) and go on."""
    assert margin([1.0, 1.0]) == 0.0 and margin([0.2, 1.0, 1.0]) == pytest.approx(0.8)
    plain, first, z = _first_wave(world)
    gaps = [margin(v) for v in z]
    same = [first[i][1] == first[i + 1][1] for i in range(0, len(first), 2)]
    assert all(g == 0.0 for g, s in zip(gaps, same) if s)  # copies score exactly alike
    cut = sorted(g for g in gaps if g > 0)[0]
    stops = {pid for pid, g in zip(plain["prompt_id"][::4], gaps) if g >= cut}
    table, metrics = _adaptive(world, waves="2,2", stop_score=None, stop_margin=cut)
    got = table.to_pydict()["prompt_id"]
    assert {pid for pid in set(got) if got.count(pid) == 2} == stops
    assert metrics["gen/wave1_stopped"] == len(stops) == sum(g > 0 for g in gaps)


def test_the_unanimous_rule_stops_prompts_whose_samples_all_agree(world):
    plain = world["plain"].to_pydict()
    pids = plain["prompt_id"][::4]
    agree = {pid for pid, a, b in zip(pids, plain["completion"][::4], plain["completion"][1::4])
             if a == b}
    assert 0 < len(agree) < 24
    table, metrics = _adaptive(world, waves="2,2", stop_score=None, stop_unanimous=2)
    got = table.to_pydict()["prompt_id"]
    assert {pid for pid in set(got) if got.count(pid) == 2} == agree
    assert metrics["gen/wave1_stopped"] == len(agree)


def test_the_budget_goes_to_the_prompts_still_open_and_a_restart_gives_the_same_rows(world):
    settings = {"waves": "2,2,4", "stop_score": 1.0}
    ctx = _ctx(world["home"], world["policy"], **settings)
    resume = ctx.resume("generations", ROUND, {"stop_model": world["rm"].id})
    table, m = _adaptive(world, resume, **settings)
    assert m["gen/rows"] <= m["gen/budget_rows"] == 24 * 4
    still_open = m["gen/wave2_prompts"] - m["gen/wave2_stopped"]
    left = 24 * 4 - m["gen/wave1_samples"] - m["gen/wave2_samples"]
    assert 0 < m["gen/wave3_prompts"] == min(still_open, left // 4) < still_open  # it binds
    pids = table.column("prompt_id").to_pylist()
    assert sum(pids.count(p) == 8 for p in set(pids)) == m["gen/wave3_prompts"]
    d = table.to_pydict()
    assert all(s == sample_seed(0, ROUND, p, j) for p, j, s in
               zip(d["prompt_id"], d["sample_index"], d["seed"]))
    # killed after wave 2's first shard: the rest is sampled again, the rows are the same
    fs, folder = ctx.store.fs, resume._shard_dir()
    kept = sorted(fs.ls(folder))
    assert any("wave3-" in p for p in kept)
    for path in kept:
        if "wave3-" in path or ("wave2-" in path and not path.endswith("000000000.parquet")):
            fs.rm(path)
    again, _ = _adaptive(world, resume, **settings)
    assert again.equals(table) and again.equals(_adaptive(world, **settings)[0])


def test_the_coverage_rule_stops_prompts_whose_unseen_completions_are_improbable(world):
    """``stop_coverage``: after a wave, a prompt stops when the rest of its plain budget would
    draw a completion it has not seen with probability at most the setting; the probabilities
    are the policy's, teacher-forced, checked here against the sampler itself. The decisions
    (and so the rows) come back the same after a restart that reads the first wave back."""
    from rs_pipeline.generation import SamplingParams, sample_prompts
    from rs_pipeline.modeling import load_policy

    settings = {"waves": "2,2", "stop_score": None, "stop_coverage": 0.3}
    ctx = _ctx(world["home"], world["policy"], **settings)
    resume = ctx.resume("generations", ROUND, {"stop_model": world["rm"].id})
    table, metrics = _adaptive(world, resume, **settings)
    plain = world["plain"].to_pydict()
    texts = plain["prompt"][::4]
    model, tok = load_policy(ctx.checkpoints.local_dir(world["base"].path))
    draws = sample_prompts(model, tok, texts, SamplingParams(n=400, max_new_tokens=9),
                           lambda p, s: 10_000 + 400 * p + s)
    share: dict[tuple[int, str], float] = {}  # the sampler's own frequency of each completion
    for p, c in zip(draws["prompt_index"], draws["completion"]):
        share[p, c] = share.get((p, c), 0.0) + 1 / 400
    d = table.to_pydict()
    stopped = {p for p, pid in enumerate(plain["prompt_id"][::4]) if d["prompt_id"].count(pid) == 2}
    assert metrics["gen/wave1_stopped"] == len(stopped) and 0 < len(stopped) < 24
    for p in range(24):
        mass = sum(share.get((p, c), 0.0) for c in set(plain["completion"][4 * p: 4 * p + 2]))
        if 1 - mass ** 2 < 0.2:
            assert p in stopped, (p, mass)
        elif 1 - mass ** 2 > 0.4:
            assert p not in stopped, (p, mass)
    fs, folder = ctx.store.fs, resume._shard_dir()
    for path in sorted(fs.ls(folder)):
        if "wave2-" in path:
            fs.rm(path)
    again, _ = _adaptive(world, resume, **settings)
    assert again.equals(table)


def test_a_replay_from_the_plain_rows_draws_what_the_waves_draw(world, monkeypatch):
    """``benchmarks/adaptive_replay.py``: the same rule sets replayed from the plain run's rows
    (its rewards and sampling probabilities) draw exactly the rows the sampled waves draw."""
    from pathlib import Path

    from rs_pipeline.steps import judging

    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parent.parent / "benchmarks"))
    from adaptive_replay import replay, replay_inputs

    ctx = _ctx(world["home"], world["policy"])
    scores, _ = judging.score_generations(ctx, world["plain"], world["rm"])
    inputs = replay_inputs(ctx, world["prompts"], world["base"], world["plain"], scores)
    for rules in ({"waves": "2,2", "stop_coverage": 0.3}, {"waves": "1,1,2", "stop_margin": 0.05},
                  {"waves": "2,1,1", "stop_unanimous": 2, "stop_coverage": 0.05}):
        table, metrics = _adaptive(world, stop_score=None, **rules)
        got = replay(*inputs, {"stop_score": None, "stop_gain": None, **rules}, n=4)
        assert got["tokens"] == sampling.generated_tokens(table), rules
        assert got["stopped"] == metrics["gen/stopped_prompts"], rules


def test_the_coverage_rule_counts_the_samples_the_plain_budget_has_left():
    """1 - S ** left <= stop_coverage, S the seen completions' total probability (capped at 1),
    left = n - drawn; a prompt with no probabilities reported never stops by it."""
    import math

    from rs_pipeline.waves import WavePlan

    plan = WavePlan([1, 1, 2], budget=12, stop_score=None, stop_gain=None, stop_coverage=0.05)
    rewards = {0: [0.0], 1: [1.0], 2: [2.0]}
    seen = {0: {"a": math.log(0.99)}, 1: {"a": math.log(0.9)}}
    assert plan.add(0, rewards, seen) == 1 and plan.stopped == {0}  # 1 - .99^3 = .03
    assert plan.n == 4
    seen = {1: {"b": math.log(0.09)}}  # S = .99 now, two samples left: 1 - .99^2 = .02
    assert plan.add(1, {1: [0.5], 2: [2.0]}, seen) == 1 and plan.stopped == {0, 1}
    cap = WavePlan([1, 1], budget=2, stop_score=None, stop_gain=None, stop_coverage=0.0)
    assert cap.add(0, {0: [0.0]}, {0: {"a": 0.0, "b": math.log(0.5)}}) == 1  # S capped at 1


@pytest.mark.parametrize("generation, says", [
    ({"waves": "2,x"}, "is not comma-separated wave sizes"),
    ({"waves": "0,2"}, "wave sizes must be >= 1"),
    ({"waves": "8,2"}, "the first wave (8) exceeds generation.n (4)"),
    ({"waves": "2,2", "engine": "vllm", "vllm_python": "/bin/sh"}, "'transformers' engine only"),
])
def test_bad_wave_settings_are_refused_naming_the_setting(generation, says):
    settings = config_from_dict(merge(TINY, {"generation": {"n": 4, **generation}}))
    with pytest.raises(InputError) as err:
        require_settings(settings)
    assert "setting generation.waves: " in str(err.value) and says in str(err.value)


def test_the_loser_rule_stops_agreeing_prompts_above_the_rounds_wrong_answers():
    """``stop_loser_quantile``: losers are samples below a distinct answer of their own prompt;
    a prompt whose best (even a unanimous one) is above that quantile of them stops."""
    from rs_pipeline.waves import WavePlan

    rewards = {0: [3.0, 0.0], 1: [2.0, 1.0], 2: [2.5, 2.5], 3: [0.5, 0.5], 4: [1.2, 1.2]}
    plan = WavePlan([2, 2], budget=100, stop_score=None, stop_gain=None, stop_loser_quantile=1.0)
    assert plan.add(0, rewards) == 4  # above the best loser (1.0): all but prompt 3
    assert plan.stopped == {0, 1, 2, 4}
    losers = sorted([plan.z[0][1], plan.z[1][1]])
    assert plan._loser_bar() == pytest.approx(losers[1])
    none = WavePlan([2, 2], budget=100, stop_score=None, stop_gain=None, stop_loser_quantile=0.5)
    assert none.add(0, {0: [1.0, 1.0], 1: [2.0, 2.0]}) == 0  # no losers yet: no bar


def test_sampling_probabilities_of_a_chat_policy_match_how_often_it_draws(tiny_chat_policy,
                                                                          tmp_path):
    """``stop_coverage``'s probabilities on a user's chat model (byte-level BPE, ChatML
    template, several stop ids): for each of a few prompts, the sampler's own share of each
    completion over 600 seeded draws (templated prompts, its stop ids) is
    ``exp(sample_probabilities)`` of that completion's text, within 4 standard errors."""
    import math

    from rs_pipeline.chat import prompt_kwargs
    from rs_pipeline.generation import SamplingParams, sample_prompts
    from rs_pipeline.resume import lazy
    from rs_pipeline.schemas import make_table
    from rs_pipeline.tasks import get_task

    ctx = _ctx(tmp_path / "home", tiny_chat_policy)
    pool, _, _ = bootstrap.prompt_sets(ctx)
    base, _ = bootstrap.base_policy(ctx, pool)
    texts = get_task("rev8").prompts()[5000:5003]
    engine = lazy(lambda: ctx.policy_engine(base))
    e = engine()
    kw = prompt_kwargs(e.model, e.tokenizer, texts, ctx.settings.policy.chat_template)
    draws = 600
    got = sample_prompts(e.model, e.tokenizer, texts, SamplingParams(
        n=draws, max_new_tokens=ctx.sampling.max_new_tokens), lambda p, s: 7_000 + draws * p + s,
        **kw)
    share: dict[tuple[int, str, bool], float] = {}
    for p, c, done in zip(got["prompt_index"], got["completion"], got["finished"]):
        share[p, c, done] = share.get((p, c, done), 0.0) + 1 / draws
    wave = {"prompt_id": [], "completion": [], "finished": []}
    for p, c, done in share:
        wave["prompt_id"].append(f"id{p}")
        wave["completion"].append(c)
        wave["finished"].append(done)
    prompts = make_table("round_prompts", {"round": [ROUND] * 3,
                                           "prompt_id": [f"id{p}" for p in range(3)],
                                           "prompt": texts})
    found = sampling.sample_probabilities(ctx, engine, prompts, wave)
    e.close()
    assert 3 < len(share) < draws  # neither one answer nor all different
    for (p, c, _), s in share.items():
        q = math.exp(found[p][c])
        assert abs(s - q) <= 4 * math.sqrt(q * (1 - q) / draws) + 0.01, (p, c, s, q)
    for p in range(3):  # what 600 draws saw holds most of each prompt's mass, never more than 1
        assert 0.8 < sum(math.exp(v) for v in found[p].values()) <= 1 + 1e-6
