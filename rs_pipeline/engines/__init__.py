"""Generation engines: one interface (``base.Engine``), two implementations chosen by the
setting ``generation.engine``: ``transformers`` (in-process sampler) and ``vllm`` (a worker in
its own venv). Both write the same ``generations`` rows."""

from __future__ import annotations

from pathlib import Path

from rs_pipeline.config import GenerationConfig
from rs_pipeline.engines.base import Engine, SeedOf, default_stop_ids, encode_prompts
from rs_pipeline.engines.hf import TransformersEngine
from rs_pipeline.engines.vllm_engine import VllmEngine, request_seed, resolve_python
from rs_pipeline.modeling import load_policy

__all__ = ["Engine", "SeedOf", "TransformersEngine", "VllmEngine", "default_stop_ids",
           "encode_prompts", "open_engine", "request_seed", "resolve_python", "start_vllm"]


def open_engine(settings: GenerationConfig, model_dir: str | Path, seed: int,
                expected_id: str | None = None) -> Engine:
    """The engine ``settings.engine`` names, holding the policy in ``model_dir`` (its weights
    verified against ``expected_id``). Close it when done (it may hold a worker process)."""
    model, tokenizer = load_policy(model_dir, expected_id=expected_id)
    if settings.engine == "transformers":
        return TransformersEngine(model, tokenizer, settings.batch_prompts)
    # the weights were verified here; vLLM loads its own copy in the worker
    return start_vllm(settings, model_dir, tokenizer, seed, model.generation_config)


def start_vllm(settings: GenerationConfig, model_dir: str | Path, tokenizer, seed: int,
               generation_config=None) -> VllmEngine:
    """A vLLM worker holding the model in ``model_dir``, with the ``generation.vllm_*``
    settings; ``generation_config`` (the folder's EOS ids) ends a turn too."""
    engine = VllmEngine(model_dir, tokenizer, resolve_python(settings.vllm_python), seed,
                        settings.vllm_dtype, settings.vllm_enforce_eager,
                        settings.vllm_tensor_parallel_size, settings.vllm_gpu_memory_utilization)
    engine.generation_config = generation_config
    return engine
