"""The round's candidate: the champion fine-tuned on the SFT set."""

from __future__ import annotations

import pyarrow as pa

from rs_pipeline.context import RunContext
from rs_pipeline.ids import table_version
from rs_pipeline.lora import fine_tune
from rs_pipeline.records import PolicyCheckpoint
from rs_pipeline.resume import Resume
from rs_pipeline.training import train_on_completions


def train_candidate(ctx: RunContext, sft: pa.Table, champion: PolicyCheckpoint,
                    round_key: str, resume: Resume | None = None) -> tuple[PolicyCheckpoint, dict]:
    """SFT from the champion (loss on completion tokens only, budget in epochs; LoRA adapters
    merged afterwards with ``sft.lora``)."""
    cfg = ctx.settings
    model, tok = ctx.load_policy(champion)
    model, metrics, lora = fine_tune(model, cfg.sft.lora, "CAUSAL_LM", "sft.lora", lambda m: (
        train_on_completions(
            m, tok, sft.column("prompt").to_pylist(), sft.column("completion").to_pylist(),
            lr=cfg.sft.learning_rate, batch_size=cfg.sft.batch_size, seed=cfg.seed,
            epochs=cfg.sft.epochs, chat_template=cfg.policy.chat_template,
            **(resume.checkpointing() if resume else {}))))
    model_id, path = ctx.checkpoints.save(model, tok, "policies", "pol")
    record = PolicyCheckpoint(id=model_id, path=path, round=round_key, parent_id=champion.id,
                              sft_dataset_version=table_version(sft), sft_rows=sft.num_rows,
                              train_loss=metrics["train_loss"], lora=lora)
    return record, {"sft/train_loss": metrics["train_loss"], "sft/steps": metrics["steps"],
                    "sft/seconds": metrics["seconds"],
                    "sft/lora_trainable_params": lora.trainable_params if lora else None}
