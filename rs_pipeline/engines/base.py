"""The generation engine interface: sample N completions per already-encoded prompt.

Callers encode prompts themselves (``encode_prompts`` for plain text; a chat template renders
and encodes its own) and name the token ids that end a completion (``stop_ids``: the
tokenizer's EOS, a template's end-of-turn, ...). Every engine returns the same columns
(``generation.completion_columns``), decoded by the policy's own tokenizer, so the rows of the
``generations`` table mean the same whichever engine wrote them.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from rs_pipeline.generation import SamplingParams, encode_prompts

SeedOf = Callable[[int, int], int]

__all__ = ["Engine", "SeedOf", "encode_prompts", "default_stop_ids"]


class Engine(Protocol):
    """A policy that samples; ``close()`` frees what it holds (a worker process, memory).
    ``generation_config`` is the policy folder's (its EOS ids: ``chat.stop_token_ids``)."""

    tokenizer: object
    generation_config: object

    def sample(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
               seed_of: SeedOf, stop_ids: Sequence[int] | None = None) -> dict:
        """``params.n`` completions per prompt, ended at the first of ``stop_ids`` (None:
        the tokenizer's EOS; empty: no stop, every row runs ``max_new_tokens``). Columns
        ``prompt_index``, ``sample_index``, ``completion``, ``num_tokens``, ``finished``,
        ``seed`` (the seed that sample really used), plus ``tokens_per_s`` and ``seconds``.
        ``seed_of(prompt_index, sample_index)`` is the caller's seed scheme; an engine may
        derive the recorded seeds from it."""
        ...

    def next_token_logprobs(self, prompt_ids: Sequence[Sequence[int]],
                            candidate_ids: Sequence[int]) -> list[list[float]]:
        """Per prompt, the log-probability (log-softmax over the whole vocabulary) of each of
        ``candidate_ids`` being the next token: a judge's answer, scored without sampling."""
        ...

    def completion_logprobs(self, rows: Sequence[tuple[Sequence[int], Sequence[int], bool]],
                            params: SamplingParams, stop_ids: Sequence[int]) -> list[float]:
        """Per ``(prompt ids, completion ids, finished)``: the log-probability that ``sample``
        with ``params`` draws that completion, its ending at a stop id included (adaptive
        best-of-N's ``stop_coverage``)."""
        ...

    def close(self) -> None: ...


def default_stop_ids(tokenizer, stop_ids: Sequence[int] | None = None) -> list[int]:
    """``stop_ids``, or the tokenizer's EOS when None."""
    return [tokenizer.eos_token_id] if stop_ids is None else list(stop_ids)
