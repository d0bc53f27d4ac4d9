"""The ``transformers`` engine: the in-process sampler of ``rs_pipeline.generation``."""

from __future__ import annotations

from collections.abc import Sequence

from rs_pipeline.engines.base import SeedOf
from rs_pipeline.generation import SamplingParams, sample_encoded


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

    def close(self) -> None:
        self.model = None
