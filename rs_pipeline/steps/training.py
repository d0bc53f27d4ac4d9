"""The round's candidate: the champion fine-tuned on the SFT set, the DPO pairs, or both
(``sft.method``)."""

from __future__ import annotations

import pyarrow as pa

from rs_pipeline.context import RunContext
from rs_pipeline.dpo import train_on_pairs
from rs_pipeline.ids import table_version
from rs_pipeline.lora import fine_tune
from rs_pipeline.records import PolicyCheckpoint
from rs_pipeline.resume import Resume
from rs_pipeline.training import train_on_completions


def training_inputs(ctx: RunContext, sft: pa.Table, champion: PolicyCheckpoint,
                    pairs: pa.Table | None) -> dict:
    """What identifies the candidate's training work (its resume key), wherever it runs."""
    inputs = {"sft": sft, "champion": champion}
    if ctx.settings.sft.method != "sft":
        inputs["dpo_pairs"] = pairs
    return inputs


def train_candidate(ctx: RunContext, sft: pa.Table, champion: PolicyCheckpoint,
                    round_key: str, resume: Resume | None = None,
                    pairs: pa.Table | None = None,
                    save: bool = True) -> tuple[PolicyCheckpoint | None, dict]:
    """From the champion: SFT on ``sft`` (loss on completion tokens only, budget in epochs),
    DPO on ``pairs`` (reference: the model the DPO starts from), or SFT then DPO. LoRA adapters
    (``sft.lora``) are merged after each stage.

    A round without DPO pairs (every prompt's samples tied, or no margin reached
    ``selection.dpo_min_margin``) does not fail: ``dpo`` falls back to SFT on the kept set and
    ``sft+dpo`` keeps its SFT result; the record says so (``method``, ``note``).

    ``save=False`` (a non-main process of a multi-process launch) trains and returns no record:
    the main process saves the same weights."""
    cfg = ctx.settings
    method, note = cfg.sft.method, None
    if method != "sft" and (pairs is None or pairs.num_rows == 0):
        method = "sft"
        why = ("a right and a wrong" if cfg.selection.dpo_pairing == "verifier" else
               "two distinct completions selection.dpo_min_margin apart")
        note = (f"{cfg.sft.method}: no DPO pairs this round (no prompt had {why}); trained by SFT "
                "on sft_dataset only")
    checkpointing = resume.checkpointing() if resume else {}
    model, tok = ctx.load_policy(champion)
    metrics: dict = {}
    lora = None
    if method in ("sft", "sft+dpo"):
        ckpt = dict(checkpointing)
        if method == "sft+dpo" and ckpt:
            ckpt["checkpoint_dir"] = ckpt["checkpoint_dir"] / "sft"
        model, sft_metrics, lora = fine_tune(model, cfg.sft.lora, "CAUSAL_LM", "sft.lora", lambda m: (
            train_on_completions(
                m, tok, sft.column("prompt").to_pylist(), sft.column("completion").to_pylist(),
                lr=cfg.sft.learning_rate, batch_size=cfg.sft.batch_size, seed=cfg.seed,
                epochs=cfg.sft.epochs, chat_template=cfg.policy.chat_template, **ckpt)))
        metrics.update({"sft/train_loss": sft_metrics["train_loss"],
                        "sft/steps": sft_metrics["steps"], "sft/seconds": sft_metrics["seconds"],
                        "sft/lora_trainable_params": lora.trainable_params if lora else None})
    if method in ("dpo", "sft+dpo"):
        ckpt = dict(checkpointing)
        if ckpt:
            ckpt["checkpoint_dir"] = ckpt["checkpoint_dir"] / "dpo"
        d = cfg.dpo
        model, dpo_metrics, dpo_lora = fine_tune(model, cfg.sft.lora, "CAUSAL_LM", "sft.lora", lambda m: (
            train_on_pairs(
                m, tok, pairs.column("prompt").to_pylist(), pairs.column("chosen").to_pylist(),
                pairs.column("rejected").to_pylist(), beta=d.beta, lr=d.learning_rate,
                batch_size=d.batch_size, seed=cfg.seed, epochs=d.epochs,
                chat_template=cfg.policy.chat_template, **ckpt)))
        lora = lora or dpo_lora
        metrics.update({f"dpo/{k.replace('rewards/', 'reward_')}": v
                        for k, v in dpo_metrics.items() if k != "resumed_from_step"})
        metrics["dpo/lora_trainable_params"] = dpo_lora.trainable_params if dpo_lora else None
    trained = metrics.get("dpo/train_loss", metrics.get("sft/train_loss"))
    if not save:
        return None, metrics
    model_id, path = ctx.checkpoints.save(model, tok, "policies", "pol")
    uses_sft, uses_dpo = method != "dpo", method != "sft"
    record = PolicyCheckpoint(
        id=model_id, path=path, round=round_key, parent_id=champion.id,
        sft_dataset_version=table_version(sft) if uses_sft else None,
        sft_rows=sft.num_rows if uses_sft else None, train_loss=trained, lora=lora,
        method=method, dpo_pairs_version=table_version(pairs) if uses_dpo else None,
        dpo_pairs=pairs.num_rows if uses_dpo else None, note=note)
    if note:
        metrics["train/fell_back_to_sft"] = 1
    return record, metrics
