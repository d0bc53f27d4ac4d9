"""Chat policies: how a prompt becomes the token ids a policy sees, and where its answer stops.

A policy whose tokenizer has a chat template (and ``policy.chat_template`` is ``auto``) sees
each prompt as a one-turn conversation rendered by that template with the generation prompt
(``<|im_start|>assistant\\n`` in ChatML), encoded without adding special tokens a second time
(the template writes any BOS itself, as ``apply_chat_template(tokenize=True)`` does). Its
answer stops at EOS *or* the template's end-of-turn token (``<|im_end|>``, ``<|eot_id|>``...);
SFT targets end with that end-of-turn token. A policy without a template (the demo's character
model), or with ``chat_template: off``, sees the prompt text as it is and stops at EOS.

A prompt that is a conversation (a prompts file's ``messages`` column) travels through the
tables as its canonical JSON text (``messages_prompt``); a one-turn user conversation is the
plain prompt text itself. So a prompt text that is such a JSON list of exactly {role, content}
objects is read back as that conversation (``as_messages``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence

ChatMode = str  # "auto" | "off" (config.ChatTemplateMode)
_PROBE = "\x00rs-pipeline-answer\x00"  # an assistant turn's content, to find what ends a turn


def messages_prompt(messages: Sequence[dict]) -> str:
    """The prompt text of a conversation: a lone user turn is its content, anything longer its
    JSON (list of {role, content})."""
    messages = [{"role": m["role"], "content": m["content"]} for m in messages]
    if len(messages) == 1 and messages[0]["role"] == "user":
        return messages[0]["content"]
    return json.dumps(messages, ensure_ascii=False, separators=(",", ":"))


def as_messages(prompt: str) -> list[dict]:
    """The conversation a prompt text stands for (the inverse of ``messages_prompt``)."""
    if prompt.startswith('[{"role":'):
        try:
            messages = json.loads(prompt)
        except json.JSONDecodeError:
            messages = None
        if isinstance(messages, list) and all(isinstance(m, dict) and set(m) == {"role", "content"}
                                              for m in messages):
            return messages
    return [{"role": "user", "content": prompt}]


def uses_template(tokenizer, mode: ChatMode = "auto") -> bool:
    return mode != "off" and bool(getattr(tokenizer, "chat_template", None))


def render_text(tokenizer, prompts: Sequence[str], mode: ChatMode = "auto") -> list[str]:
    """The text the policy is given for each prompt (templated, or the prompt as it is)."""
    if not uses_template(tokenizer, mode):
        return list(prompts)
    return [tokenizer.apply_chat_template(as_messages(p), add_generation_prompt=True,
                                          tokenize=False) for p in prompts]


def render_prompts(tokenizer, prompts: Sequence[str], mode: ChatMode = "auto") -> list[list[int]]:
    """Token ids the policy is given for each prompt; special tokens are never added on top
    (a template writes its own BOS; the demo's prompts carry none)."""
    texts = render_text(tokenizer, prompts, mode)
    return tokenizer(texts, add_special_tokens=False)["input_ids"] if texts else []


def end_of_turn_id(tokenizer, mode: ChatMode = "auto") -> int:
    """The token an answer ends with: the template's end-of-turn token, else EOS."""
    if uses_template(tokenizer, mode):
        found = _template_end_of_turn(tokenizer)
        if found is not None:
            return found
    if tokenizer.eos_token_id is None:
        raise ValueError("the policy's tokenizer has neither an EOS token nor a chat template "
                         "with an end-of-turn token: nothing can end an answer")
    return tokenizer.eos_token_id


def stop_token_ids(tokenizer, model=None, mode: ChatMode = "auto") -> list[int]:
    """Every id that ends sampling: the tokenizer's EOS, the model's ``generation_config``
    EOS ids (Qwen2 lists ``<|im_end|>`` and ``<|endoftext|>`` there) and, when templating, the
    template's end-of-turn token. Sorted, so the same folder gives the same list."""
    ids = {tokenizer.eos_token_id}
    gen = getattr(model, "generation_config", None)
    eos = getattr(gen, "eos_token_id", None)
    ids.update(eos if isinstance(eos, list | tuple) else [eos])
    if uses_template(tokenizer, mode):
        ids.add(end_of_turn_id(tokenizer, mode))
    return sorted(i for i in ids if i is not None)


def _template_end_of_turn(tokenizer) -> int | None:
    """The first special token the template writes after an assistant turn's content."""
    text = tokenizer.apply_chat_template(
        [{"role": "user", "content": "x"}, {"role": "assistant", "content": _PROBE}],
        tokenize=False)
    if _PROBE not in text:
        return None
    tail = tokenizer(text.split(_PROBE, 1)[1], add_special_tokens=False)["input_ids"]
    special = set(tokenizer.all_special_ids) | set(tokenizer.added_tokens_decoder)
    return next((i for i in tail if i in special), None)


def prompt_kwargs(model, tokenizer, prompts: Sequence[str], mode: ChatMode = "auto") -> dict:
    """``generation.sample_prompts`` keyword arguments for a policy: its rendered prompt ids
    and its stop ids."""
    return {"prompt_ids": render_prompts(tokenizer, prompts, mode),
            "stop_ids": stop_token_ids(tokenizer, model, mode)}
