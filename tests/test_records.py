import pytest

from rs_pipeline.history import history_frame, read_history, round_row
from rs_pipeline.records import (
    ChampionChoice,
    GateDecision,
    PolicyCheckpoint,
    PolicyEvaluation,
    PolicyMetrics,
    Promotion,
    RoundEvaluation,
    from_dict,
    to_dict,
)
from rs_pipeline.schemas import make_table
from rs_pipeline.storage import AssetStore

BASE = PolicyCheckpoint(id="pol-base", path="checkpoints/policies/pol-base", source="demo")
CAND = PolicyCheckpoint(id="pol-c1", path="checkpoints/policies/pol-c1", round="r0001",
                        parent_id="pol-base", sft_dataset_version="v1", sft_rows=3)


def _evaluation(key, promoted, cand=0.8, champ=0.5):
    m = PolicyMetrics(n_prompts=4, distinct_share=0.5, mean_length=8.0, greedy_acc=cand,
                      sample_acc=0.6, pass_at_n=0.9, mean_reward=1.0)
    c = PolicyMetrics(n_prompts=4, distinct_share=0.5, mean_length=8.0, greedy_acc=champ)
    reason = "promoted: ..." if promoted else "regression: ..."
    return RoundEvaluation(key, CAND.id, BASE.id, "rm-1", PolicyEvaluation(m, m),
                           PolicyEvaluation(c, c), GateDecision(
                               promoted, "greedy_acc", cand, champ, not promoted, False, reason))


def test_records_round_trip_through_their_json_form_and_refuse_unknown_fields():
    ev = _evaluation("r0001", True)
    assert from_dict(RoundEvaluation, to_dict(ev)) == ev
    choice = ChampionChoice(CAND, "promotion", "r0001")
    assert from_dict(ChampionChoice, to_dict(choice)) == choice
    with pytest.raises(ValueError, match="unexpected field"):
        from_dict(PolicyCheckpoint, {**to_dict(BASE), "policy_id": "pol-base"})


def test_the_store_keeps_each_json_asset_to_its_record_type(tmp_path):
    store = AssetStore(str(tmp_path))
    store.write_record("base_policy", BASE)
    assert store.read_record("base_policy") == BASE
    with pytest.raises(TypeError, match="holds PolicyCheckpoint records"):
        store.write_record("base_policy", _evaluation("r0001", True))


def test_history_reads_each_round_state_from_its_records(tmp_path):
    store = AssetStore(str(tmp_path))
    for key in ("r0001", "r0002", "r0003"):
        store.write_table("round_prompts", make_table("round_prompts", {
            "round": [key], "prompt_id": ["p"], "prompt": ["q"]}), key)
    store.write_record("policy_checkpoint", CAND, "r0001")
    store.write_record("round_eval", _evaluation("r0001", True), "r0001")
    store.write_record("promotion", Promotion("r0001", CAND, "promoted", BASE.id), "r0001")
    store.write_record("round_eval", _evaluation("r0002", False, cand=0.4), "r0002")
    rows = read_history(store)
    assert [(r.round, r.state) for r in rows] == [
        ("r0001", "promoted"), ("r0002", "refused"), ("r0003", "incomplete")]
    assert (rows[0].policy_id, rows[0].parent_policy_id, rows[0].gate, rows[0].champion_gate) == (
        "pol-c1", "pol-base", 0.8, 0.5)
    assert rows[2].reason is None and not rows[2].evaluated
    # an evaluation not yet stored stands for its round's outcome
    pending = round_row(store, "r0003", _evaluation("r0003", True))
    assert pending.state == "promoted" and pending.greedy_acc == 0.8
    frame = history_frame(read_history(store, current=_evaluation("r0003", False)))
    assert frame["round"].tolist() == ["r0001", "r0002", "r0003"]
    assert frame["promoted"].tolist() == [True, False, False]
