from rs_pipeline.evaluation import gate_decision


def _ev(acc, reward):
    return {"sample_acc": acc, "mean_reward": reward}


def test_gate_promotes_within_tolerance_and_refuses_regressions():
    d = gate_decision({"greedy_acc": 0.985}, {"greedy_acc": 0.99}, _ev(0.9, 1.0), _ev(0.9, 1.0),
                      tolerance=0.01, reward_margin=0.05, acc_margin=0.01)
    assert d.promoted and not d.regressed
    d = gate_decision({"greedy_acc": 0.95}, {"greedy_acc": 0.99}, _ev(0.9, 1.0), _ev(0.9, 1.0),
                      tolerance=0.01, reward_margin=0.05, acc_margin=0.01)
    assert not d.promoted and d.regressed and "regression" in d.reason


def test_gate_refuses_reward_hacking_even_without_gate_regression():
    d = gate_decision({"greedy_acc": 0.99}, {"greedy_acc": 0.99}, _ev(0.70, 2.0), _ev(0.80, 1.0),
                      tolerance=0.01, reward_margin=0.05, acc_margin=0.01)
    assert not d.promoted and d.reward_hacking and not d.regressed
    assert "reward hacking" in d.reason


def test_gate_without_verifier_uses_greedy_reward():
    d = gate_decision({"greedy_acc": None, "greedy_mean_reward": 1.5},
                      {"greedy_acc": None, "greedy_mean_reward": 1.0},
                      _ev(None, 1.5), _ev(None, 1.0), 0.0, 0.05, 0.01)
    assert d.promoted and d.metric == "greedy_mean_reward"
