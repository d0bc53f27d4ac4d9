"""The vLLM worker: runs in its own venv (``make vllm``), never imports ``rs_pipeline``.

vLLM pins versions of torch and transformers the pipeline's venv does not have, so the
``vllm`` engine (``vllm_engine.py``) starts this file as a script with that venv's Python and
talks to it in JSON lines: one request on stdin, one reply on stdout. Anything else written to
stdout (vLLM's logs) is sent to stderr. Tokens in, tokens out: tokenizing and decoding stay with
the pipeline (``skip_tokenizer_init``).

Requests: ``{"cmd": "load", "model": folder, "llm": {...LLM kwargs}}``; ``{"cmd": "generate",
"prompts": [[ids]], "seeds": [seed per prompt] | null, "n": N, "temperature": t, "top_p": p,
"top_k": k, "max_tokens": m, "stop_token_ids": [ids]}`` -> ``{"ok": true, "outputs": [[[ids] *
N] per prompt], "seconds": <time in LLM.generate>}``; ``{"cmd": "next_token_logprobs", "prompts":
[[ids]], "candidates": [ids]}`` -> ``{"ok": true, "logprobs": [[log-prob per candidate] per
prompt]}`` (the full-vocabulary log-softmax of the next position, vLLM's ``logprob_token_ids``);
``{"cmd": "reset_prefix_cache"}`` (forget cached prompts, for timing); ``{"cmd": "quit"}``.
Errors: ``{"ok": false, "error": "..."}``.
vLLM gives child ``i`` of a request seeded ``S`` the seed ``S + i``.
"""

import json
import os
import sys
import time


class Worker:
    def __init__(self):
        self.llm = None

    def load(self, req):
        from vllm import LLM

        start = time.perf_counter()
        self.llm = None
        self.llm = LLM(model=req["model"], skip_tokenizer_init=True, **req["llm"])
        import vllm

        return {"version": vllm.__version__, "seconds": time.perf_counter() - start}

    def generate(self, req):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if self.llm is None:
            raise RuntimeError("no model loaded")
        seeds = req["seeds"] or [None] * len(req["prompts"])
        params = [SamplingParams(n=req["n"], seed=seed, temperature=req["temperature"],
                                 top_p=req["top_p"], top_k=req["top_k"],
                                 max_tokens=req["max_tokens"], ignore_eos=True,
                                 stop_token_ids=req["stop_token_ids"], detokenize=False)
                  for seed in seeds]
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in req["prompts"]]
        start = time.perf_counter()
        results = self.llm.generate(prompts, params, use_tqdm=False)
        seconds = time.perf_counter() - start
        outputs = [[list(c.token_ids) for c in sorted(r.outputs, key=lambda c: c.index)]
                   for r in results]
        return {"outputs": outputs, "seconds": seconds}

    def next_token_logprobs(self, req):
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if self.llm is None:
            raise RuntimeError("no model loaded")
        cands = [int(c) for c in req["candidates"]]
        # one greedy token; its position's raw log-softmax gathered at exactly these ids
        params = SamplingParams(max_tokens=1, temperature=0.0, logprobs=len(cands),
                                logprob_token_ids=cands, detokenize=False)
        prompts = [TokensPrompt(prompt_token_ids=ids) for ids in req["prompts"]]
        results = self.llm.generate(prompts, params, use_tqdm=False)
        return {"logprobs": [[r.outputs[0].logprobs[0][c].logprob for c in cands]
                             for r in results]}

    def reset_prefix_cache(self, req):
        return {"reset": bool(self.llm.reset_prefix_cache())}


def main() -> None:
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # vLLM's prints and logs must not enter the protocol
    sys.stdout = sys.stderr
    worker = Worker()
    handlers = {"load": worker.load, "generate": worker.generate,
                "next_token_logprobs": worker.next_token_logprobs,
                "reset_prefix_cache": worker.reset_prefix_cache}
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "quit":
            break
        try:
            reply = {"ok": True, **handlers[req["cmd"]](req)}
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        channel.write(json.dumps(reply) + "\n")
    channel.close()


if __name__ == "__main__":
    main()
