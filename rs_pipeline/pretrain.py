"""The demo's base policy: a tiny GPT-2 pretrained on the task's deliberately bugged data."""

from __future__ import annotations

import random
from collections.abc import Sequence

from rs_pipeline.config import PolicyConfig
from rs_pipeline.modeling import build_char_tokenizer, build_tiny_gpt2
from rs_pipeline.tasks.base import Task
from rs_pipeline.training import train_on_completions


def pretrain_base_policy(task: Task, train_prompts: Sequence[str], cfg: PolicyConfig, seed: int,
                         **checkpointing):
    """Build tokenizer + model and pretrain for ``cfg.pretrain_steps`` steps.

    A share ``cfg.bug_rate`` of the answers carry the task's systematic bug, so the policy's
    mode is wrong while the right answer is often among its samples: the state rejection
    sampling is meant to fix. ``checkpointing``: ``checkpoint_dir``/``checkpoint_steps`` of
    ``training.run_trainer``. Returns (model, tokenizer, metrics).
    """
    tokenizer = build_char_tokenizer(task.alphabet)
    model = build_tiny_gpt2(tokenizer, cfg.n_layer, cfg.n_embd, cfg.n_head, cfg.n_positions, seed)
    metrics = pretrain_on_task(model, tokenizer, task, train_prompts, cfg, seed, **checkpointing)
    return model, tokenizer, metrics


def pretrain_on_task(model, tokenizer, task: Task, train_prompts: Sequence[str], cfg: PolicyConfig,
                     seed: int, **kwargs) -> dict:
    """Train ``model`` in place for ``cfg.pretrain_steps`` steps on the task's answers, a share
    ``cfg.bug_rate`` of them bugged (prompts rendered as the policy will see them: a chat
    policy learns its template). ``kwargs`` go to ``training.train_on_completions``."""
    rng = random.Random(seed)
    n = cfg.pretrain_steps * cfg.pretrain_batch_size
    prompts = [rng.choice(train_prompts) for _ in range(n)]
    completions = [task.pretrain_completion(p, rng, cfg.bug_rate) for p in prompts]
    return train_on_completions(
        model, tokenizer, prompts, completions, lr=cfg.pretrain_lr,
        batch_size=cfg.pretrain_batch_size, seed=seed, max_steps=cfg.pretrain_steps,
        scheduler="cosine_with_min_lr", min_lr_rate=0.1, chat_template=cfg.chat_template,
        **kwargs,
    )
