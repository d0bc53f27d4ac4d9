"""Model annotators (reward model, judge LLM) and the mixed annotator: the numbers they label
with, the settings they refuse, and one round each through Dagster."""

import math
import shutil

import dagster as dg
import pyarrow.parquet as pq
import pytest
import torch
from transformers import GPT2ForSequenceClassification

from rs_pipeline.annotators import Label, MixedAnnotator, annotator_version, make_annotator
from rs_pipeline.annotators.judge import answer_ids
from rs_pipeline.annotators.mixed import parse_mix
from rs_pipeline.config import AnnotatorConfig, config_from_dict, merge
from rs_pipeline.context import RunContext, check_settings
from rs_pipeline.defs.runner import failure_messages, run_bootstrap, run_round
from rs_pipeline.engines import TransformersEngine
from rs_pipeline.errors import InputError
from rs_pipeline.ids import table_version
from rs_pipeline.modeling import (
    build_char_tokenizer,
    load_policy,
    load_preference,
    tiny_gpt2_config,
    weights_id,
)
from rs_pipeline.preference import score
from rs_pipeline.preflight import preflight
from rs_pipeline.storage import AssetStore
from rs_pipeline.tasks import get_task
from rs_pipeline.testing_models import build_tiny_judge
from tests.conftest import PROMOTE_ALL, make_home

PAIRS = [("01201201=", "10210210", "10201210"), ("0=", "0", "11111111"),
         ("2221=", "1222", "1222x"), ("01=", "10", "01")]


@pytest.fixture(scope="session")
def reward_folder(tmp_path_factory):
    """A tiny one-output GPT-2 classifier reading rev8 text with the demo's character tokenizer;
    its score head is drawn at scale 1 so rewards differ by O(1)."""
    tok = build_char_tokenizer(get_task("rev8").alphabet)
    config = tiny_gpt2_config(tok, n_layer=1, n_embd=32, n_head=2, n_positions=64)
    config.num_labels = 1
    torch.manual_seed(0)
    model = GPT2ForSequenceClassification(config)
    with torch.no_grad():
        model.score.weight.normal_(0.0, 1.0)
    path = tmp_path_factory.mktemp("reward_model")
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


@pytest.fixture(scope="session")
def judge_folder(tmp_path_factory):
    """``build_tiny_judge``: an untrained tiny Llama chat judge with a strong position bias."""
    return build_tiny_judge(tmp_path_factory.mktemp("judge"), get_task("rev8"))


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


# --- reward model ---------------------------------------------------------------------------

def test_reward_model_labels_are_the_sigmoid_of_the_reward_margin(reward_folder):
    ann = make_annotator(AnnotatorConfig(kind="reward_model", reward_model_path=str(reward_folder),
                                         temperature=0.5), get_task("rev8"), 0)
    labels = ann.label(PAIRS)
    model, tok = load_preference(reward_folder)
    prompts = [p for p, _, _ in PAIRS]
    ra, rb = score(model, tok, prompts, [a for _, a, _ in PAIRS]), score(
        model, tok, prompts, [b for _, _, b in PAIRS])
    assert max(abs(a - b) for a, b in zip(ra, rb)) > 0.1  # the margins are not all ~0
    for lab, a, b in zip(labels, ra, rb):
        assert lab.hp == pytest.approx(_sigmoid((a - b) / 0.5), abs=1e-6)
    assert {lab.annotator_id for lab in labels} == {"reward_model:" + weights_id(model, "rm")}
    flipped = ann.label([(p, b, a) for p, a, b in PAIRS])
    assert [f.hp for f in flipped] == pytest.approx([1 - lab.hp for lab in labels], abs=1e-12)


def test_reward_model_folder_must_be_a_one_output_classifier(judge_folder, tmp_path):
    cfg = config_from_dict({"annotator": {"kind": "reward_model",
                                          "reward_model_path": str(judge_folder)}})
    problems = preflight(RunContext(cfg, tmp_path / "home"))
    assert any("annotator.reward_model_path" in p and "not a one-output sequence classifier" in p
               for p in problems), problems
    with pytest.raises(InputError, match="annotator.reward_model_path"):
        make_annotator(cfg.annotator, get_task("rev8"), 0).label(PAIRS)


# --- judge ----------------------------------------------------------------------------------

def test_the_annotator_version_follows_the_files_a_labelling_step_reads(reward_folder, tmp_path):
    """A labelling step is redone when its reward model, judge or template changes, not when
    an unused setting does."""
    folder = tmp_path / "rm"
    shutil.copytree(reward_folder, folder)
    template = tmp_path / "judge.txt"
    template.write_text("{prompt} A: {a} B: {b}")
    rm = AnnotatorConfig(kind="reward_model", reward_model_path=str(folder),
                         judge_template=str(template))
    first = annotator_version(rm)
    assert annotator_version(rm) == first
    template.write_text("{prompt} 1: {a} 2: {b}")  # not read by a reward_model annotator
    assert annotator_version(rm) == first
    (folder / "config.json").write_text((folder / "config.json").read_text() + " ")
    assert annotator_version(rm) != first
    judge = AnnotatorConfig(kind="judge", judge_path=str(folder), judge_template=str(template))
    before = annotator_version(judge)
    template.write_text("{prompt} first: {a} second: {b}")
    assert annotator_version(judge) != before
    assert annotator_version(AnnotatorConfig()) == annotator_version(AnnotatorConfig(label_noise=0.2))


def test_judge_removes_position_bias(judge_folder):
    ann = make_annotator(AnnotatorConfig(kind="judge", judge_path=str(judge_folder)),
                         get_task("rev8"), 0)
    forward = ann.label(PAIRS)
    backward = ann.label([(p, b, a) for p, a, b in PAIRS])
    for f, b in zip(forward, backward):
        assert 0.0 < f.hp < 1.0
        assert f.hp + b.hp == pytest.approx(1.0, abs=1e-12)
    assert max(abs(f.hp - 0.5) for f in forward) > 0.01  # it does prefer something
    engine = ann.engine()
    q = ann.preferences(engine, [*PAIRS, *((p, b, a) for p, a, b in PAIRS)])
    n = len(PAIRS)
    assert max(abs(q1 + q2 - 1) for q1, q2 in zip(q[:n], q[n:])) > 0.01  # raw bias was there
    model, _ = load_policy(judge_folder)
    assert forward[0].annotator_id.startswith(f"judge:{weights_id(model, 'pol')}:tpl-")


def test_judge_template_must_hold_every_placeholder(judge_folder, tmp_path):
    bad = tmp_path / "judge.txt"
    bad.write_text("Prompt {prompt}\nA: {a}\nWhich is better?")
    with pytest.raises(InputError, match=r"annotator.judge_template: .* lacks the placeholder\(s\) "
                                         r"\{b\}"):
        make_annotator(AnnotatorConfig(kind="judge", judge_path=str(judge_folder),
                                       judge_template=str(bad)), get_task("rev8"), 0)
    good = tmp_path / "judge2.txt"
    good.write_text("Q {prompt}\nA) {a}\nB) {b}\nBetter:")
    ann = make_annotator(AnnotatorConfig(kind="judge", judge_path=str(judge_folder),
                                         judge_template=str(good)), get_task("rev8"), 0)
    default = make_annotator(AnnotatorConfig(kind="judge", judge_path=str(judge_folder)),
                             get_task("rev8"), 0)
    lab, lab_default = ann.label(PAIRS[:1])[0], default.label(PAIRS[:1])[0]
    assert lab.annotator_id != lab_default.annotator_id  # the template is part of the id
    assert lab.annotator_id.split(":tpl-")[0] == lab_default.annotator_id.split(":tpl-")[0]


def test_answer_tokens_are_found_after_the_prompt_with_or_without_a_space(judge_folder):
    _, tok = load_policy(judge_folder)
    for text in ("Better:", "Better: ", "<|im_start|>assistant\n"):
        a_ids, b_ids = answer_ids(tok, text, templated=True)
        assert a_ids and b_ids and not set(a_ids) & set(b_ids)
        assert {tok.decode([i]).strip() for i in a_ids} == {"A"}
        assert {tok.decode([i]).strip() for i in b_ids} == {"B"}


@pytest.mark.parametrize("which", ["llama", "gpt2"])
def test_engine_next_token_logprobs_equal_a_direct_forward(which, judge_folder, tiny_policy):
    model, tok = load_policy(judge_folder if which == "llama" else tiny_policy)
    texts = ["0120=", "0", "2", "0121201201221=102", "11="]
    prompts = [tok(t, add_special_tokens=False)["input_ids"] for t in texts]
    assert len({len(p) for p in prompts}) > 2
    candidates = [0, 3, len(tok) - 1]
    got = TransformersEngine(model, tok, batch_prompts=4).next_token_logprobs(prompts, candidates)
    with torch.no_grad():
        for ids, row in zip(prompts, got):
            logits = model(torch.tensor([ids])).logits[0, -1]
            want = torch.log_softmax(logits.float(), -1)[candidates].tolist()
            assert row == pytest.approx(want, abs=1e-5)


# --- mixed ----------------------------------------------------------------------------------

class _Fixed:
    """A stand-in source: fixed hp per pair index (None: not labelled)."""

    source = "fixed"

    def __init__(self, name, hps, source=None):
        self.name, self.hps, self.src = name, hps, source

    def label(self, pairs, salt=""):
        return [None if h is None else Label(h, self.name, self.src) for h in self.hps]


def test_mixed_averages_the_sources_that_labelled_each_pair():
    mixed = MixedAnnotator([(_Fixed("x", [1.0, None, 0.2, None]), 3.0),
                            (_Fixed("y", [0.0, 0.4, None, None], "f@v1"), 1.0)])
    labels = mixed.label(PAIRS)
    assert labels[0].hp == pytest.approx(0.75) and labels[0].annotator_id == "x+y"
    assert labels[0].source == "f@v1"
    assert (labels[1].hp, labels[1].annotator_id) == (pytest.approx(0.4), "y")
    assert (labels[2].hp, labels[2].annotator_id, labels[2].source) == (
        pytest.approx(0.2), "x", None)
    assert labels[3] is None


def test_mixed_with_real_sources(reward_folder):
    task = get_task("rev8")
    cfg = AnnotatorConfig(kind="mixed", mix="simulated=1, reward_model=3", label_noise=0.0,
                          reward_model_path=str(reward_folder))
    labels = make_annotator(cfg, task, 0).label(PAIRS, salt="r0001")
    sim = make_annotator(AnnotatorConfig(label_noise=0.0), task, 0).label(PAIRS, salt="r0001")
    rm = make_annotator(AnnotatorConfig(kind="reward_model", reward_model_path=str(reward_folder)),
                        task, 0).label(PAIRS)
    for lab, s, r in zip(labels, sim, rm):
        assert lab.hp == pytest.approx((s.hp + 3 * r.hp) / 4, abs=1e-12)
        assert lab.annotator_id == f"{s.annotator_id}+{r.annotator_id}"


def test_mix_setting_is_validated_with_every_problem_at_once():
    with pytest.raises(InputError) as err:
        parse_mix("simulated=0.5,mixed=1,people=2,judge=0,reward_model")
    text = str(err.value)
    for part in ("'mixed' cannot be mixed into itself", "unknown kind 'people'",
                 "weight of 'judge' must be > 0", "'reward_model' is not name=weight"):
        assert part in text
    assert parse_mix(" simulated = 0.5 , reward_model=0.5 ") == [("simulated", 0.5),
                                                                  ("reward_model", 0.5)]
    problems = check_settings(config_from_dict({"annotator": {"kind": "mixed", "mix": "x=1"}}))
    assert any("setting annotator.mix: unknown kind 'x'" in p for p in problems)
    problems = check_settings(config_from_dict({"annotator": {"kind": "mixed"}}))
    assert any("annotator.mix is required" in p for p in problems)


def test_missing_folders_and_template_are_setting_errors_all_at_once(tmp_path, judge_folder):
    problems = check_settings(config_from_dict({"annotator": {
        "kind": "mixed", "mix": "reward_model=1,judge=1",
        "reward_model_path": str(tmp_path / "nope"), "judge_path": str(tmp_path / "none"),
        "judge_template": str(tmp_path / "t.txt")}}))
    assert any(p.startswith("setting annotator.reward_model_path:") for p in problems)
    assert any(p.startswith("setting annotator.judge_path:") for p in problems)
    assert any(p.startswith("setting annotator.judge_template:") for p in problems)
    # preflight: a judge folder without a tokenizer, a classifier that is not one, a template
    # lacking a placeholder: reported together
    bare = tmp_path / "bare"
    load_policy(judge_folder)[0].save_pretrained(bare)
    template = tmp_path / "t.txt"
    template.write_text("{prompt} {a}")
    cfg = config_from_dict({"annotator": {
        "kind": "mixed", "mix": "reward_model=1,judge=1", "reward_model_path": str(judge_folder),
        "judge_path": str(bare), "judge_template": str(template)}})
    problems = preflight(RunContext(cfg, tmp_path / "home"))
    assert any("annotator.reward_model_path" in p and "one-output" in p for p in problems)
    assert any(f"annotator.judge_path: {bare} has no tokenizer" in p for p in problems)
    assert any("annotator.judge_template" in p and "{b}" in p for p in problems)
    # a judge on vLLM needs the worker's Python, named by its setting; unused, nothing is asked
    missing = str(tmp_path / "no-venv" / "python")
    on_vllm = {"annotator": {"kind": "judge", "judge_path": str(judge_folder),
                             "judge_engine": "vllm"}, "generation": {"vllm_python": missing}}
    assert [p for p in check_settings(config_from_dict(on_vllm))
            if p.startswith("setting generation.vllm_python: no Python at")]
    judge = RunContext(config_from_dict(on_vllm), tmp_path / "home").annotator
    assert (judge.vllm.engine, judge.vllm.vllm_python) == ("vllm", missing)  # the round's settings
    on_vllm["annotator"]["kind"] = "simulated"
    assert not [p for p in check_settings(config_from_dict(on_vllm)) if "vllm_python" in p]


# --- one round through Dagster ----------------------------------------------------------------

@pytest.mark.slow
@pytest.mark.parametrize("kind", ["reward_model", "judge"])
def test_a_round_labelled_by_a_model_annotator(kind, tmp_path, monkeypatch, reward_folder,
                                               judge_folder):
    section = ({"kind": kind, "reward_model_path": str(reward_folder), "temperature": 2.0}
               if kind == "reward_model" else {"kind": kind, "judge_path": str(judge_folder)})
    settings = merge(PROMOTE_ALL, {"annotator": section,
                                   "preference": {"seed_pairs": 200, "pairs_per_round": 60}})
    make_home(tmp_path / "home", monkeypatch, settings)
    instance = dg.DagsterInstance.get()
    boot = run_bootstrap(instance)
    assert boot.success, failure_messages(instance, boot)
    key, result = run_round(instance)
    assert result.success, failure_messages(instance, result)

    store = AssetStore(str(tmp_path / "home" / "assets"))
    table = pq.read_table(tmp_path / "home" / "assets" / "preference_labels" / f"{key}.parquet")
    rows = table.to_pydict()
    annotator = make_annotator(config_from_dict({"annotator": section}).annotator,
                               get_task("rev8"), 0)
    triples = list(zip(rows["prompt"], rows["completion_a"], rows["completion_b"]))
    expected = annotator.label(triples, salt=key)
    assert table.num_rows > 0 and set(rows["annotator"]) == {kind}
    assert set(rows["annotator_id"]) == {annotator.annotator_id}
    assert annotator.annotator_id.startswith(f"{kind}:")
    assert rows["hp"] == pytest.approx([e.hp for e in expected], abs=1e-6)
    seed = pq.read_table(tmp_path / "home" / "assets" / "seed_preferences.parquet")
    assert set(seed.column("annotator_id").to_pylist()) == {annotator.annotator_id}
    record = store.read_record("preference_model", key)
    assert record.train_pairs > 0 and record.labels_version == table_version(table)
    shutil.rmtree(tmp_path / "home", ignore_errors=True)
