"""The gate's judges (``rs_pipeline.gate``): numbers in, decision and recorded comparison out;
how ``auto`` chooses; the pair-accuracy floor and pair-set checks; hooks and reward models
checked before any work; records written before the judge fields still load."""

import dataclasses
import json
import sys

import pytest

from rs_pipeline.config import GateConfig, config_from_dict
from rs_pipeline.context import RunContext, check_settings
from rs_pipeline.evaluation import gate_decision
from rs_pipeline.gate import (
    JudgeComparison,
    choose_judge,
    floor_check,
    hook_scores,
    load_hook,
    pairs_set_check,
    win_rate,
)
from rs_pipeline.history import round_row
from rs_pipeline.preflight import preflight
from rs_pipeline.records import GateDecision, PolicyMetrics, RoundEvaluation, from_dict, to_dict
from rs_pipeline.storage import AssetStore
from rs_pipeline.tasks import get_task
from rs_pipeline.tasks.prompts_file import PromptsFileTask

GATE = GateConfig(tolerance=0.01, min_pair_acc=0.6)


def _m(greedy=None, greedy_reward=None):
    return PolicyMetrics(n_prompts=10, distinct_share=1.0, mean_length=3.0, greedy_acc=greedy,
                         greedy_mean_reward=greedy_reward)


def decide(judge, checks=()):
    """The gate on judge values alone (no verifier metrics: no reward-hacking signal)."""
    return gate_decision(_m(), _m(), _m(), _m(), GATE, judge, checks)


@pytest.fixture
def prompts_file(tmp_path):
    path = tmp_path / "prompts.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n"
                            for p in get_task("rev8").prompts()[:40]))
    return path


@pytest.fixture
def hook_module(tmp_path, monkeypatch):
    """A module outside the package holding hooks (one exact-match, one broken, one not
    callable), on sys.path."""
    (tmp_path / "my_gate_hooks.py").write_text(
        "def exact(prompts, completions):\n"
        "    return [float(c == p[:-1][::-1]) for p, c in zip(prompts, completions)]\n"
        "def short(prompts, completions):\n"
        "    return [1.0]\n"
        "def crashes(prompts, completions):\n"
        "    raise RuntimeError('boom')\n"
        "NOT_A_FUNCTION = 3\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield "my_gate_hooks"
    sys.modules.pop("my_gate_hooks", None)


# --- the decision for each judge ---------------------------------------------------------------

def test_verifier_judge_keeps_todays_rule_and_records_its_numbers():
    d = gate_decision(_m(0.95), _m(0.99), _m(), _m(), GATE)  # no judge given: the verifier
    assert not d.promoted and d.regressed and "regression" in d.reason
    assert (d.judge, d.metric, d.candidate, d.champion) == ("verifier", "greedy_acc", 0.95, 0.99)
    assert d.summary() == "verifier .950/.990"
    ok = decide(JudgeComparison("verifier", "greedy_acc", 0.912, 0.88))
    assert ok.promoted and ok.summary() == "verifier .912/.880"


@pytest.mark.parametrize("kind,metric,cand,champ,promoted", [
    ("hook", "hook_mean", 0.61, 0.58, True),
    ("hook", "hook_mean", 0.50, 0.70, False),
    ("hook", "hook_mean", 0.695, 0.70, True),  # within the tolerance
    ("reward_model", "greedy_mean_reward", -1.25, -1.0, False),
    ("reward_model", "greedy_mean_reward", 2.0, 1.5, True),
    ("seed_preference", "greedy_mean_reward", 0.3, 0.1, True),
])
def test_mean_judges_refuse_below_the_champion_minus_tolerance(kind, metric, cand, champ,
                                                               promoted):
    d = decide(JudgeComparison(kind, metric, cand, champ, judge_id="x"))
    assert (d.promoted, d.regressed) == (promoted, not promoted)
    assert (d.judge, d.judge_id, d.metric, d.candidate, d.champion) == (kind, "x", metric, cand,
                                                                        champ)
    assert (f"{kind} {metric} {cand:.4f}" in d.reason) and (
        d.reason.startswith("promoted") == promoted)


def test_summaries_name_the_judge_with_candidate_and_champion_values():
    assert decide(JudgeComparison("hook", "hook_mean", 0.61, 0.58)).summary() == "hook .610/.580"
    assert decide(JudgeComparison("reward_model", "greedy_mean_reward", -1.25, 0.5)).summary() \
        == "rm -1.250/.500"
    assert decide(JudgeComparison("seed_preference", "greedy_mean_reward", 1.0, 2.0)).summary() \
        == "seed_rm 1.000/2.000"


def test_annotator_win_rate_counts_identical_completions_as_ties_and_skips_unlabelled():
    cand, champ = ["a", "b", "c", "d", "e"], ["a", "x", "y", "z", "e"]
    rate, counted = win_rate([None, 1.0, 0.0, None, None], cand, champ)  # "d" unlabelled
    assert counted == 4 and rate == pytest.approx((0.5 + 1.0 + 0.0 + 0.5) / 4)
    assert win_rate([None, None], ["p", "q"], ["r", "s"]) == (None, 0)
    tie = decide(JudgeComparison("annotator", "win_rate", rate, 1 - rate))
    assert tie.promoted and tie.summary() == "annotator .500/.500"
    lost = decide(JudgeComparison("annotator", "win_rate", 0.45, 0.55, "judge:abc"))
    assert not lost.promoted and lost.regressed
    assert "annotator win_rate 0.4500 < 0.5 - tolerance 0.01" in lost.reason
    just = decide(JudgeComparison("annotator", "win_rate", 0.4901, 0.5099))
    assert just.promoted  # 0.5 - tolerance is the bar, not the champion's share


def test_a_judge_that_measured_nothing_refuses_with_its_note():
    d = decide(JudgeComparison("annotator", "win_rate", None, None,
                               note="0 of 64 gate pairs counted (0 identical)"))
    assert not d.promoted and "measured nothing" in d.reason and "0 of 64" in d.reason
    assert d.summary() == "annotator -/-"


# --- the pair-accuracy floor and the pair-set check --------------------------------------------

def test_the_floor_refuses_a_round_whose_preference_model_ranks_too_few_pairs():
    judge = JudgeComparison("hook", "hook_mean", 0.7, 0.6)
    floor = floor_check(0.55, 0.6)
    assert (floor.value, floor.bar, floor.passed) == (0.55, 0.6, False)
    d = decide(judge, [floor])
    assert not d.promoted and not d.regressed
    assert "held-out pair accuracy 0.5500 < floor gate.min_pair_acc 0.6" in d.reason
    assert d.pair_acc_floor == floor and d.summary() == "hook .700/.600 pairs .550<.600"
    passed = decide(judge, [floor_check(0.6, 0.6)])
    assert passed.promoted and "pair accuracy 0.6000 >= floor 0.6" in passed.reason
    unmeasured = floor_check(None, 0.6)
    assert unmeasured.passed and "not applied" in unmeasured.note
    d = decide(judge, [unmeasured])
    assert d.promoted and d.pair_acc_floor.value is None
    verifier_selected = floor_check(0.3, 0.6, selector="verifier")
    assert verifier_selected.passed and "verifier selected" in verifier_selected.note
    assert not floor_check(0.3, 0.6, selector="mix").passed


def test_the_pair_set_refuses_a_preference_model_worse_than_the_previous_one():
    judge = JudgeComparison("verifier", "greedy_acc", 0.9, 0.9)
    worse = pairs_set_check(0.70, 0.78, tolerance=0.05)
    assert (worse.value, worse.reference, worse.passed) == (0.70, 0.78, False)
    assert worse.bar == pytest.approx(0.73)
    d = decide(judge, [floor_check(0.9, 0.6), worse])
    assert not d.promoted and "pair accuracy on gate.pairs_path 0.7000 < previous" in d.reason
    assert d.summary() == "verifier .900/.900 pairset .700<.730"
    assert pairs_set_check(0.74, 0.78, tolerance=0.05).passed
    assert decide(judge, [pairs_set_check(0.74, 0.78, 0.05)]).promoted
    assert pairs_set_check(None, None, 0.05).passed  # nothing decided to measure


def test_every_failure_is_in_the_reason_at_once():
    d = decide(JudgeComparison("hook", "hook_mean", 0.2, 0.7),
               [floor_check(0.3, 0.6), pairs_set_check(0.5, 0.9, 0.01)])
    assert not d.promoted
    assert [p.split(":")[0] for p in d.reason.split("; ")] == [
        "regression", "preference model", "preference model"]


# --- records on disk ---------------------------------------------------------------------------

def test_decisions_round_trip_and_old_records_load_with_the_new_fields_empty(tmp_path):
    d = decide(JudgeComparison("hook", "hook_mean", 0.5, 0.7, "m:f", "auto: ..."),
               [floor_check(0.55, 0.6), pairs_set_check(0.8, 0.7, 0.01)])
    assert from_dict(GateDecision, to_dict(d)) == d
    old = {"promoted": False, "metric": "greedy_mean_reward", "candidate": 0.4,
           "champion": 0.5, "regressed": True, "reward_hacking": False, "reason": "regression: x"}
    loaded = from_dict(GateDecision, old)
    assert (loaded.judge, loaded.pair_acc_floor, loaded.pairs_set) == (None, None, None)
    assert loaded.summary() == "round_rm .400/.500"
    # a whole round_eval written by the previous version, read through the store and history
    m = {"n_prompts": 4, "distinct_share": 1.0, "mean_length": 8.0, "greedy_acc": 0.8}
    ev = {"round": "r0001", "candidate_id": "c", "champion_id": "b", "reward_model_id": "rm",
          "candidate": {"eval": m, "gate": m}, "champion": {"eval": m, "gate": m},
          "decision": {**old, "metric": "greedy_acc", "candidate": 0.8, "champion": 0.75,
                       "promoted": True, "regressed": False, "reason": "promoted: ..."}}
    store = AssetStore(str(tmp_path))
    path = tmp_path / "round_eval" / "r0001.json"
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps(ev))
    record = store.read_record("round_eval", "r0001")
    assert isinstance(record, RoundEvaluation) and record.decision.judge is None
    row = round_row(store, "r0001")
    assert (row.gate_judge, row.gate_summary, row.state) == ("verifier", "verifier .800/.750",
                                                             "incomplete")


# --- choosing the judge ------------------------------------------------------------------------

def _settings(prompts_file, **gate):
    return config_from_dict({"task": {"name": "prompts_file", "prompts_path": str(prompts_file)},
                             "annotator": {"kind": "file", "path": str(prompts_file)},
                             "gate": gate})


def test_auto_takes_verifier_then_hook_then_reward_model_then_annotator_then_the_seed(
        prompts_file, tmp_path):
    rev8, plain = get_task("rev8"), PromptsFileTask(prompts_file)
    assert choose_judge(config_from_dict({"gate": {"hook": "m:f"}}), rev8).kind == "verifier"
    both = _settings(prompts_file, hook="m:f", reward_model_path=str(tmp_path))
    assert choose_judge(both, plain).kind == "hook"
    rm = _settings(prompts_file, reward_model_path=str(tmp_path))
    assert choose_judge(rm, plain).kind == "reward_model"
    model_annotator = dataclasses.replace(
        _settings(prompts_file), annotator=dataclasses.replace(
            _settings(prompts_file).annotator, kind="judge"))
    assert choose_judge(model_annotator, plain).kind == "annotator"
    for mix, kind in (("reward_model=0.5,judge=0.5", "annotator"),
                      ("file=0.5,judge=0.5", "seed_preference")):
        mixed = dataclasses.replace(model_annotator, annotator=dataclasses.replace(
            model_annotator.annotator, kind="mixed", mix=mix))
        assert choose_judge(mixed, plain).kind == kind, mix
    fallback = choose_judge(_settings(prompts_file), plain)  # a file annotator cannot judge
    assert fallback.kind == "seed_preference" and "fell back to the seed preference model" in \
        fallback.note
    explicit = _settings(prompts_file, judge="annotator", hook="m:f")
    assert choose_judge(explicit, plain).kind == "annotator"


def test_settings_a_judge_needs_are_refused_naming_the_setting(prompts_file, tmp_path):
    seed = {"preference": {"seed_labels_path": str(prompts_file)}}

    def problems(**gate):
        cfg = config_from_dict({"task": {"name": "prompts_file",
                                         "prompts_path": str(prompts_file)},
                                "policy": {"base_path": str(tmp_path)},
                                "annotator": {"kind": "file", "path": str(prompts_file)},
                                **seed, "gate": gate})
        return [p for p in check_settings(cfg) if "gate" in p]

    assert problems(judge="verifier") == [
        "setting gate.judge='verifier' needs a task with a verifier; task 'prompts_file' has "
        "none: use 'auto', 'hook', 'reward_model' or 'annotator'"]
    assert problems(judge="hook") == ["setting gate.hook is required when gate.judge is 'hook'"]
    assert problems(judge="reward_model") == [
        "setting gate.reward_model_path is required when gate.judge is 'reward_model'"]
    assert problems(reward_model_path=str(tmp_path)) == [
        f"setting gate.reward_model_path: {tmp_path} is not a Hugging Face model folder (no "
        "config.json)"]
    assert problems(pairs_path=str(tmp_path / "none.jsonl")) == [
        f"setting gate.pairs_path: file {tmp_path / 'none.jsonl'} does not exist"]
    assert problems(judge="auto") == problems(judge="annotator") == []
    assert check_settings(config_from_dict({"gate": {"judge": "verifier"}})) == []  # rev8


# --- hooks -------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec,message", [
    ("no_such_gate_module:exact", "setting gate.hook: cannot import module 'no_such_gate_module'"),
    ("my_gate_hooks:missing", "setting gate.hook: module 'my_gate_hooks' has no attribute "
                              "'missing'"),
    ("my_gate_hooks:NOT_A_FUNCTION", "setting gate.hook: 'my_gate_hooks:NOT_A_FUNCTION' is of "
                                     "type 'int', not a callable"),
    ("my_gate_hooks", "setting gate.hook: 'my_gate_hooks' is not an import path"),
])
def test_a_hook_that_does_not_load_is_a_preflight_problem_naming_the_setting(
        hook_module, spec, message, tmp_path):
    ctx = RunContext(config_from_dict({"gate": {"hook": spec}}), tmp_path / "home")
    found = [p for p in preflight(ctx) if "gate.hook" in p]
    assert len(found) == 1 and found[0].startswith(message), found


def test_hook_scores_are_checked(hook_module):
    from rs_pipeline.errors import InputError

    assert load_hook("my_gate_hooks:exact")(["012="], ["210"]) == [1.0]
    assert hook_scores("my_gate_hooks:exact", ["012=", "012="], ["210", "201"]) == [1.0, 0.0]
    with pytest.raises(InputError, match="returned 1 scores for 2 completions"):
        hook_scores("my_gate_hooks:short", ["a", "b"], ["c", "d"])
    with pytest.raises(InputError, match=r"gate.hook: hook 'my_gate_hooks:crashes' failed on the "
                                         r"gate's completions \(RuntimeError: boom\)"):
        hook_scores("my_gate_hooks:crashes", ["a"], ["c"])


# --- the held-back reward model and the pair set, before any work ------------------------------

def test_preflight_wants_a_one_output_classifier_and_a_clean_pair_set(tiny_policy, tmp_path):
    from rs_pipeline.modeling import load_preference

    model, tok = load_preference(tiny_policy)
    rm = tmp_path / "held_back_rm"
    model.save_pretrained(rm)
    tok.save_pretrained(rm)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"prompt": "0120=", "completion_a": "0210",
                                 "completion_b": "0201", "hp": 1.5}) + "\n")

    def gate_problems(**gate):
        ctx = RunContext(config_from_dict({"gate": gate}), tmp_path / "home")
        return [p for p in preflight(ctx) if "gate" in p or str(pairs) in p]

    assert gate_problems(reward_model_path=str(rm)) == []
    assert gate_problems(reward_model_path=str(tiny_policy)) == [
        f"setting gate.reward_model_path: {tiny_policy} is not a one-output sequence classifier "
        "(architectures ['GPT2LMHeadModel'], 2 outputs): a reward model scores each response "
        "with one number"]
    found = gate_problems(pairs_path=str(pairs))
    assert len(found) == 1 and "row 0, column 'hp': must be a finite number in [0, 1]" in found[0]


# --- the judges on completions (steps.evaluation.judge_round) ----------------------------------

def test_judge_round_scores_completions_with_the_reward_model_and_the_annotator(
        tiny_policy, prompts_file, tmp_path):
    from rs_pipeline.annotators import Label
    from rs_pipeline.modeling import load_preference
    from rs_pipeline.preference import score
    from rs_pipeline.steps.evaluation import judge_round

    model, tok = load_preference(tiny_policy)
    rm = tmp_path / "held_back_rm"
    model.save_pretrained(rm)
    tok.save_pretrained(rm)
    prompts = ["0120=", "2101=", "1111="]
    cand, champ = ["0210", "1012", "1111"], ["0201", "1012", "0000"]
    base = {"task": {"name": "prompts_file", "prompts_path": str(prompts_file)},
            "annotator": {"kind": "file", "path": str(prompts_file)}}

    def ctx(**gate):
        return RunContext(config_from_dict({**base, "gate": gate}), tmp_path / "home")

    c = judge_round(ctx(judge="reward_model", reward_model_path=str(rm)), prompts, cand, champ,
                    _m(), _m(), None, "r0001")
    assert (c.judge, c.metric) == ("reward_model", "greedy_mean_reward")
    assert c.candidate == pytest.approx(sum(score(model, tok, prompts, cand)) / 3)
    assert c.champion == pytest.approx(sum(score(model, tok, prompts, champ)) / 3)
    assert c.judge_id.startswith("rm-")

    class Judge:  # prefers the candidate on the first pair; asked only about distinct pairs
        source = "judge"
        asked: list = []

        def label(self, pairs, salt=""):
            self.asked.extend(pairs)
            return [Label(0.9, "judge:abc")] * (len(pairs) - 1) + [None]

    annotated = ctx(judge="annotator")
    annotated.__dict__["annotator"] = Judge()  # the run's annotator, as make_annotator built it
    c = judge_round(annotated, prompts, cand, champ, _m(), _m(), None, "r0001")
    assert Judge.asked == [("0120=", "0210", "0201"), ("1111=", "1111", "0000")]
    assert (c.metric, c.candidate, c.judge_id) == ("win_rate", pytest.approx((0.9 + 0.5) / 2),
                                                   "judge:abc")
    assert c.note == "2 of 3 gate pairs counted (1 identical)"
