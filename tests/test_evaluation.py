from rs_pipeline.config import GateConfig
from rs_pipeline.evaluation import evaluate_policy, gate_decision
from rs_pipeline.generation import SamplingParams
from rs_pipeline.modeling import load_policy
from rs_pipeline.records import PolicyMetrics
from rs_pipeline.tasks import get_task

GATE = GateConfig(tolerance=0.01, hacking_reward_margin=0.05, hacking_acc_margin=0.01)


def _m(greedy=None, sample=None, reward=None, greedy_reward=None):
    return PolicyMetrics(n_prompts=10, distinct_share=1.0, mean_length=3.0, greedy_acc=greedy,
                         sample_acc=sample, mean_reward=reward, greedy_mean_reward=greedy_reward)


def test_gate_promotes_within_tolerance_and_refuses_regressions():
    d = gate_decision(_m(0.985), _m(0.99), _m(sample=0.9, reward=1.0), _m(sample=0.9, reward=1.0),
                      GATE)
    assert d.promoted and not d.regressed
    d = gate_decision(_m(0.95), _m(0.99), _m(sample=0.9, reward=1.0), _m(sample=0.9, reward=1.0),
                      GATE)
    assert not d.promoted and d.regressed and "regression" in d.reason
    assert (d.metric, d.candidate, d.champion) == ("greedy_acc", 0.95, 0.99)


def test_gate_refuses_reward_hacking_even_without_gate_regression():
    d = gate_decision(_m(0.99), _m(0.99), _m(sample=0.70, reward=2.0), _m(sample=0.80, reward=1.0),
                      GATE)
    assert not d.promoted and d.reward_hacking and not d.regressed
    assert "reward hacking" in d.reason


def test_gate_without_verifier_uses_greedy_reward():
    gate = GateConfig(tolerance=0.0)
    d = gate_decision(_m(greedy_reward=1.5), _m(greedy_reward=1.0), _m(reward=1.5),
                      _m(reward=1.0), gate)
    assert d.promoted and d.metric == "greedy_mean_reward"
    d = gate_decision(_m(greedy_reward=0.5), _m(greedy_reward=1.0), _m(reward=0.5),
                      _m(reward=1.0), gate)
    assert not d.promoted and d.regressed


def test_evaluate_policy_counts_greedy_sampled_pass_at_n_and_rewards(tiny_policy):
    model, tok = load_policy(tiny_policy)
    task = get_task("rev8")
    prompts = task.prompts()[3000:3040]
    params = SamplingParams(n=4, temperature=1.0, max_new_tokens=9)
    m = evaluate_policy(model, tok, task, prompts, params, lambda ps, cs: [float(len(c))
                                                                          for c in cs], seed=0)
    assert m.n_prompts == 40 and 0 <= m.greedy_acc <= 1 and 0 <= m.sample_acc <= m.pass_at_n <= 1
    assert m.mean_reward == m.mean_length  # the toy reward is the completion's length
    assert 0.25 <= m.distinct_share <= 1.0
    again = evaluate_policy(model, tok, task, prompts, params, None, seed=0)
    assert (again.sample_acc, again.mean_reward) == (m.sample_acc, None)  # seeded: same samples
    greedy_only = evaluate_policy(model, tok, task, prompts, params, None, seed=0, sampled=False)
    assert greedy_only.sample_acc == greedy_only.greedy_acc == m.greedy_acc
