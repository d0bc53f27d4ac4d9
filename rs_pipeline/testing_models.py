"""A tiny chat policy built here (no download): a Llama-architecture model with a byte-level BPE
tokenizer trained on the task's text and a ChatML chat template, saved as an ordinary Hugging
Face folder. It stands in for a user's chat LLM in tests and try-outs.

Modelled on Qwen2: the tokenizer's EOS is ``<|endoftext|>`` while ``generation_config.json``
lists ``[<|im_end|>, <|endoftext|>]`` as EOS ids, and the template ends each turn with
``<|im_end|>``; there is no BOS.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from rs_pipeline.config import PolicyConfig
from rs_pipeline.pretrain import pretrain_on_task
from rs_pipeline.tasks.base import Task

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def build_bpe_chat_tokenizer(texts: Sequence[str], vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on ``texts`` (and the template's role words), with
    ChatML special tokens and template; EOS and padding are ``<|endoftext|>``."""
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.Sequence([  # digits one by one, as Qwen2 splits them
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False)])
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=[ENDOFTEXT, IM_START, IM_END],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    roles = ["system\n", "user\n", "assistant\n"] * 50
    core.train_from_iterator([*texts, *roles], trainer=trainer)
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token=ENDOFTEXT, pad_token=ENDOFTEXT,
                                  additional_special_tokens=[IM_START, IM_END])
    tok.chat_template = CHATML_TEMPLATE
    tok.padding_side = "right"
    return tok


def build_tiny_llama(tokenizer, hidden: int = 64, layers: int = 2, heads: int = 4,
                     positions: int = 128, seed: int = 0) -> LlamaForCausalLM:
    """A randomly initialised Llama (grouped-query attention, RoPE, SwiGLU) sized for tests."""
    torch.manual_seed(seed)
    eos, im_end = tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids(IM_END)
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=max(1, heads // 2), max_position_embeddings=positions,
                         bos_token_id=None, eos_token_id=eos, pad_token_id=eos,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(eos_token_id=[im_end, eos], pad_token_id=eos)
    return model


def build_tiny_chat_policy(folder: str | Path, task: Task, train_prompts: Sequence[str],
                           cfg: PolicyConfig | None = None, seed: int = 0, heads: int = 4) -> Path:
    """Build the tiny chat policy, pretrain it briefly on ``task`` through its chat template
    (``cfg.pretrain_*``/``bug_rate``, as the demo model is pretrained) and save it to ``folder``.
    ``heads=2`` gives heads of width 32, the narrowest vLLM's CPU attention takes."""
    cfg = cfg or PolicyConfig(pretrain_steps=150, pretrain_batch_size=64, pretrain_lr=3e-3)
    cfg = replace(cfg, chat_template="auto")
    corpus = [p + task.answer(p) for p in train_prompts[:2000]] if task.has_verifier else list(
        train_prompts)
    tokenizer = build_bpe_chat_tokenizer(corpus)
    model = build_tiny_llama(tokenizer, heads=heads, seed=seed)
    if cfg.pretrain_steps and task.has_verifier:
        pretrain_on_task(model, tokenizer, task, train_prompts, cfg, seed)
    folder = Path(folder)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def build_tiny_judge(folder: str | Path, task: Task, heads: int = 4, seed: int = 1) -> Path:
    """An untrained tiny Llama chat model (byte-level BPE, ChatML) with 512 positions (the
    built-in judge prompt is ~165 tokens), saved to ``folder``; its weights are drawn at std
    0.2 (not 0.02) so its answers depend on the text: arbitrary A/B preferences with a strong
    position bias. ``heads=2`` for vLLM's CPU attention (heads of width 32; seed 3 then prefers
    one side of the test pairs by up to 0.025, seed 1 by 1e-4 only)."""
    tok = build_bpe_chat_tokenizer([p + task.answer(p) for p in task.prompts()[:500]])
    model = build_tiny_llama(tok, positions=512, heads=heads, seed=seed)
    with torch.no_grad():
        for weight in model.parameters():
            if weight.dim() == 2:
                weight.normal_(0.0, 0.2)
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return Path(folder)
