"""The ``transformers`` engine: the in-process sampler of ``rs_pipeline.generation``."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rs_pipeline.engines.base import SeedOf
from rs_pipeline.generation import SamplingParams, sample_encoded, sampled_logprobs


class TransformersEngine:
    """Prefill once, N samples per prompt on the shared prompt cache (``sample_encoded``);
    sample ``s`` of prompt ``p`` uses the seed ``seed_of(p, s)``."""

    def __init__(self, model, tokenizer, batch_prompts: int = 256):
        self.model, self.tokenizer, self.batch_prompts = model, tokenizer, batch_prompts
        self.generation_config = model.generation_config

    def sample(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
               seed_of: SeedOf, stop_ids: Sequence[int] | None = None) -> dict:
        return sample_encoded(self.model, self.tokenizer, prompt_ids, params, seed_of,
                              self.batch_prompts, stop_ids)

    @torch.no_grad()
    def next_token_logprobs(self, prompt_ids: Sequence[Sequence[int]],
                            candidate_ids: Sequence[int]) -> list[list[float]]:
        """One forward per batch of ``batch_prompts`` prompts (sorted by length, so little
        padding): left-padded, positions counted from each row's first real token, logits at
        the last position only, log-softmax there; rows come back in the caller's order."""
        order = sorted(range(len(prompt_ids)), key=lambda i: len(prompt_ids[i]))
        cands = torch.tensor(list(candidate_ids), dtype=torch.long)
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: list[list[float]] = [[] for _ in prompt_ids]
        for start in range(0, len(order), self.batch_prompts):
            rows = order[start:start + self.batch_prompts]
            width = max(len(prompt_ids[i]) for i in rows)
            ids = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, i in enumerate(rows):
                n = len(prompt_ids[i])
                if n == 0:
                    raise ValueError(f"prompt {i} is empty: there is no position to score")
                ids[r, width - n:] = torch.tensor(list(prompt_ids[i]), dtype=torch.long)
                mask[r, width - n:] = 1
            positions = (mask.cumsum(-1) - 1).clamp_(min=0)
            logits = self.model(input_ids=ids, attention_mask=mask, position_ids=positions,
                                use_cache=False, logits_to_keep=1).logits[:, -1, :]
            logp = torch.log_softmax(logits.float(), dim=-1)[:, cands]
            for r, i in enumerate(rows):
                out[i] = logp[r].tolist()
        return out

    def completion_logprobs(self, rows: Sequence[tuple[Sequence[int], Sequence[int], bool]],
                            params: SamplingParams, stop_ids: Sequence[int]) -> list[float]:
        """Per ``(prompt ids, completion ids, finished)``: the log-probability that ``sample``
        with ``params`` draws that completion (``generation.sampled_logprobs``)."""
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        return sampled_logprobs(self.model, rows, params, stop_ids, pad)

    def close(self) -> None:
        self.model = None
