"""LoRA: only adapters (and a classifier's head) train, the merged model is a plain checkpoint
that computes what the adapted model computed."""

import datasets
import pytest
import torch
from transformers import AutoModelForCausalLM

from rs_pipeline.config import LoraConfig, config_from_dict
from rs_pipeline.context import RunContext
from rs_pipeline.errors import InputError
from rs_pipeline.lora import fine_tune
from rs_pipeline.modeling import load_policy, load_preference, preference_from_policy
from rs_pipeline.preference import pair_accuracy, score, train_preference
from rs_pipeline.preflight import preflight
from rs_pipeline.records import LoraUse, PolicyCheckpoint, from_dict, to_dict
from rs_pipeline.tasks import get_task
from rs_pipeline.training import train_on_completions
from tests.conftest import sentiment_pairs

ON = LoraConfig(enabled=True, r=4, alpha=8.0)


def _watch(train, after=None):
    """``train`` wrapped to note what was trainable, check the frozen weights stay put and keep
    ``after(adapted model)`` (computed before the adapters are merged)."""
    seen: dict = {}

    def run(model):
        frozen = {n: p.detach().clone() for n, p in model.named_parameters() if not p.requires_grad}
        seen["trainable"] = [n for n, p in model.named_parameters() if p.requires_grad]
        metrics = train(model)
        seen["frozen_unchanged"] = all(torch.equal(p, frozen[n])
                                       for n, p in model.named_parameters() if n in frozen)
        seen["frozen"] = len(frozen)
        if after is not None:
            with torch.no_grad():
                seen["adapted"] = after(model)
        return metrics

    return run, seen


def test_lora_sft_trains_adapters_only_and_merges_into_a_plain_causal_lm(tiny_policy, tmp_path):
    task = get_task("rev8")
    prompts = task.prompts()[4000:4128]
    model, tok = load_policy(tiny_policy)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probe = torch.tensor([tok("0120=2100")["input_ids"]])
    run, seen = _watch(lambda m: train_on_completions(
        m, tok, prompts, [task.answer(p) for p in prompts], lr=5e-3, batch_size=32, seed=0,
        epochs=1), after=lambda m: m(input_ids=probe).logits)
    merged, metrics, lora = fine_tune(model, ON, "CAUSAL_LM", "sft.lora", run)

    assert metrics["steps"] == 4 and seen["frozen_unchanged"] and seen["frozen"] > 0
    assert seen["trainable"] and all("lora_" in n for n in seen["trainable"])
    assert lora.target_modules == ["c_attn"] and lora.r == 4 and lora.alpha == 8.0
    assert lora.trainable_params == 2 * 4 * (64 + 3 * 64)  # A (4x64), B (192x4), 2 layers
    changed = [k for k, v in merged.state_dict().items() if not torch.equal(v, before[k])]
    assert changed and all("c_attn.weight" in k for k in changed)
    with torch.no_grad():
        assert torch.allclose(merged(input_ids=probe).logits, seen["adapted"], atol=1e-5)
    merged.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    assert not (tmp_path / "adapter_config.json").exists()
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, local_files_only=True)
    with torch.no_grad():
        assert torch.allclose(loaded(input_ids=probe).logits, seen["adapted"], atol=1e-5)


def test_preference_lora_keeps_the_score_head_trainable_and_merges(tiny_policy, tmp_path):
    task = get_task("rev8")
    prompts = task.prompts()[2000:2256]
    pairs = [(p, task.answer(p), task.bugged_answer(p), 1.0) for p in prompts]
    texts = prompts[:8], [task.answer(p) for p in prompts[:8]]
    model, tok = preference_from_policy(tiny_policy, seed=0)
    head = model.score.weight.detach().clone()
    body = model.transformer.h[0].mlp.c_fc.weight.detach().clone()
    run, seen = _watch(lambda m: train_preference(m, tok, pairs, epochs=1, lr=3e-3, batch_size=32,
                                                  seed=0), after=lambda m: score(m, tok, *texts))
    merged, _, lora = fine_tune(model, ON, "SEQ_CLS", "preference.lora", run)

    assert seen["frozen_unchanged"]
    assert {n for n in seen["trainable"] if "lora_" not in n} == {
        "base_model.model.score.modules_to_save.default.weight"}
    assert "score" in lora.modules_to_save
    assert not torch.equal(merged.score.weight, head)  # the trained head was kept
    assert torch.equal(merged.transformer.h[0].mlp.c_fc.weight, body)  # not a target: untouched
    assert score(merged, tok, *texts) == pytest.approx(seen["adapted"], abs=1e-5)
    merged.save_pretrained(tmp_path)
    tok.save_pretrained(tmp_path)
    loaded, ltok = load_preference(tmp_path)
    assert score(loaded, ltok, *texts) == pytest.approx(seen["adapted"], abs=1e-5)


def test_lora_on_minilm_learns_preferences_it_was_not_shown(minilm_base):
    train, held = sentiment_pairs()
    model, tok = load_preference(minilm_base)
    before = pair_accuracy(model, tok, held)
    run, seen = _watch(lambda m: train_preference(m, tok, train, epochs=1, lr=2e-3, batch_size=16,
                                                  seed=0))
    merged, metrics, lora = fine_tune(model, LoraConfig(enabled=True), "SEQ_CLS",
                                      "preference.lora", run)
    assert metrics["steps"] == 4 and seen["frozen_unchanged"]
    assert lora.target_modules == ["query", "value"]  # peft's default for BERT
    assert {n.split(".modules_to_save")[0] for n in seen["trainable"] if "lora_" not in n} == {
        "base_model.model.classifier"}
    assert lora.trainable_params < 0.01 * lora.total_params
    assert before < 0.5 and pair_accuracy(merged, tok, held) >= 0.9


def test_target_modules_that_do_not_fit_are_one_error_naming_the_setting(tiny_policy):
    model, _ = load_policy(tiny_policy)
    bad = LoraConfig(enabled=True, target_modules="q_proj, v_proj")
    with pytest.raises(InputError, match=r"setting sft\.lora\.target_modules: 'q_proj, v_proj'"):
        fine_tune(model, bad, "CAUSAL_LM", "sft.lora", lambda m: {})


def test_lora_settings_load_checked_and_records_stay_backward_compatible():
    cfg = config_from_dict({"sft": {"lora": {"enabled": True, "r": 16, "target_modules":
                                             "all-linear"}}})
    assert cfg.sft.lora.r == 16 and not cfg.preference.lora.enabled
    with pytest.raises(InputError, match=r"preference\.lora\.r: must be >= 1"):
        config_from_dict({"preference": {"lora": {"r": 0}}})
    old = {"id": "pol-1", "path": "checkpoints/policies/pol-1"}  # written before LoRA existed
    assert from_dict(PolicyCheckpoint, old).lora is None
    rec = PolicyCheckpoint(id="pol-2", path="p", lora=LoraUse(
        r=4, alpha=8.0, dropout=0.0, target_modules=["c_attn"], modules_to_save=[],
        trainable_params=10, total_params=100))
    assert from_dict(PolicyCheckpoint, to_dict(rec)) == rec
    assert rec.lora.summary() == "r=4 alpha=8 dropout=0 targets=c_attn trainable=10/100"


def test_preflight_refuses_lora_targets_that_fit_neither_model(minilm_base, tmp_path):
    settings = config_from_dict({
        "sft": {"lora": {"enabled": True, "target_modules": "c_attn,q_proj"}},
        "preference": {"base_path": str(minilm_base),
                       "lora": {"enabled": True, "target_modules": "c_attn"}}})
    problems = preflight(RunContext(settings, tmp_path))
    assert [p for p in problems if ".lora." in p] == [
        "setting sft.lora.target_modules: 'c_attn,q_proj' does not fit the GPT2LMHeadModel model "
        "(no module is named q_proj)",
        "setting preference.lora.target_modules: 'c_attn' does not fit the "
        "BertForSequenceClassification model (no module is named c_attn)"]
    fine = config_from_dict({"sft": {"lora": {"enabled": True, "target_modules": "all-linear"}},
                             "preference": {"lora": {"enabled": True}}})
    assert not [p for p in preflight(RunContext(fine, tmp_path)) if ".lora." in p]


class _Crash(Exception):
    pass


def test_an_interrupted_lora_run_resumes_to_the_same_merged_weights(tiny_policy, tmp_path):
    from transformers import Trainer
    from trl.trainer.sft_trainer import DataCollatorForLanguageModeling

    from rs_pipeline.lora import wrap
    from rs_pipeline.training import encode_completions, run_trainer

    class CrashAtStep3(Trainer):
        def training_step(self, *args, **kwargs):
            if self.state.global_step == 3:
                raise _Crash
            return super().training_step(*args, **kwargs)

    task = get_task("rev8")
    prompts = task.prompts()[4000:4128]
    _, tok = load_policy(tiny_policy)
    rows = datasets.Dataset.from_list(
        encode_completions(tok, prompts, [task.answer(p) for p in prompts]))
    collator = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id,
                                               return_position_ids=False)

    def train(folder, trainer_cls=Trainer):
        torch.manual_seed(0)
        model = wrap(load_policy(tiny_policy)[0], ON, "CAUSAL_LM", "sft.lora")
        metrics = run_trainer(model, rows, collator, trainer_cls=trainer_cls, lr=5e-3,
                              batch_size=32, seed=0, epochs=1, checkpoint_dir=folder,
                              checkpoint_steps=2)
        return model.merge_and_unload(), metrics

    whole, _ = train(tmp_path / "a")
    with pytest.raises(_Crash):
        train(tmp_path / "b", CrashAtStep3)
    resumed, metrics = train(tmp_path / "b")
    assert metrics["resumed_from_step"] == 2 and metrics["steps"] == 4
    base = load_policy(tiny_policy)[0].state_dict()
    assert not torch.equal(whole.state_dict()["transformer.h.0.attn.c_attn.weight"],
                           base["transformer.h.0.attn.c_attn.weight"])
    for key, value in whole.state_dict().items():
        assert torch.allclose(resumed.state_dict()[key], value, atol=1e-6), key
