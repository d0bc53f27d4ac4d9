"""The engine interface and what needs no vLLM: the transformers engine on encoded prompts with
stop ids, the vLLM engine's seed scheme, its worker protocol and its setting errors."""

import json
import sys

import pytest

from rs_pipeline.config import GenerationConfig, config_from_dict
from rs_pipeline.context import check_settings
from rs_pipeline.engines import (
    TransformersEngine,
    VllmEngine,
    encode_prompts,
    open_engine,
    request_seed,
    resolve_python,
)
from rs_pipeline.errors import InputError
from rs_pipeline.generation import SamplingParams, sample_prompts
from rs_pipeline.modeling import load_policy
from rs_pipeline.tasks import get_task


@pytest.fixture(scope="module")
def hf(tiny_policy):
    model, tok = load_policy(tiny_policy)
    return TransformersEngine(model, tok, batch_prompts=16)


def test_transformers_engine_on_encoded_prompts_gives_the_rows_of_sample_prompts(hf):
    prompts = get_task("rev8").prompts()[:24]
    params = SamplingParams(n=3, temperature=1.0, max_new_tokens=9)

    def seed_of(p, s):
        return 7 * p + s

    ours = hf.sample(encode_prompts(hf.tokenizer, prompts), params, seed_of)
    ref = sample_prompts(hf.model, hf.tokenizer, prompts, params, seed_of, batch_prompts=5)
    keys = ("prompt_index", "sample_index", "completion", "num_tokens", "finished", "seed")
    assert {k: ours[k] for k in keys} == {k: ref[k] for k in keys}
    assert ours["seed"][:4] == [0, 1, 2, 7]


def test_a_completion_ends_at_the_first_of_several_stop_ids(hf):
    """A chat template's end-of-turn id next to EOS: greedy rows stopped at '1' are the EOS-only
    rows cut before their first '1'."""
    tok = hf.tokenizer
    prompts = get_task("rev8").prompts()[200:232]
    ids = encode_prompts(tok, prompts)
    one = tok.convert_tokens_to_ids("1")
    params = SamplingParams(n=2, temperature=0.0, max_new_tokens=9)
    plain = hf.sample(ids, params, lambda p, s: 0)
    stopped = hf.sample(ids, params, lambda p, s: 0, stop_ids=[tok.eos_token_id, one])
    cut = [c.split("1")[0] for c in plain["completion"]]
    assert stopped["completion"] == cut and cut != plain["completion"]
    assert stopped["num_tokens"] == [len(c) for c in cut]  # one token per character
    assert stopped["finished"] == [f or "1" in c for f, c in zip(plain["finished"],
                                                                   plain["completion"])]
    unstopped = hf.sample(ids, params, lambda p, s: 0, stop_ids=[])  # no stop id at all
    assert set(unstopped["num_tokens"]) == {9} and not any(unstopped["finished"])
    assert any(plain["finished"])


def test_vllm_requests_are_seeded_so_that_no_two_samples_share_a_seed():
    n = 8
    bases = [12345, 12346, 2**31 - 1]  # neighbouring base seeds still give disjoint ranges
    used = [request_seed(lambda p, s: bases[p], p, n) + s for p in range(3) for s in range(n)]
    assert len(set(used)) == 3 * n and used[:2] == [12345 * 8, 12345 * 8 + 1]
    assert max(used) < 2**63


def test_engine_vllm_without_its_python_is_one_clear_settings_error(tmp_path):
    missing = str(tmp_path / "no-venv" / "bin" / "python")
    cfg = config_from_dict({"generation": {"engine": "vllm", "vllm_python": missing}})
    problems = check_settings(cfg)
    assert len(problems) == 1 and problems[0].startswith("setting generation.vllm_python: ")
    assert missing in problems[0] and "make vllm" in problems[0]
    assert check_settings(config_from_dict({"generation": {"vllm_python": missing}})) == []
    with pytest.raises(InputError, match="generation.engine"):
        config_from_dict({"generation": {"engine": "vLLM"}})


def test_a_relative_worker_python_is_found_in_the_working_directory(tmp_path, monkeypatch):
    (tmp_path / "env" / "bin").mkdir(parents=True)
    python = tmp_path / "env" / "bin" / "python"
    python.write_text("#!/bin/sh\n")
    python.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    assert resolve_python("env/bin/python") == python
    assert resolve_python(str(python)) == python


def test_a_worker_that_cannot_load_vllm_fails_with_its_reason(tiny_policy):
    """This venv's Python has no vLLM: the worker answers the load with the import error."""
    model, tok = load_policy(tiny_policy)
    with pytest.raises(RuntimeError, match="worker failed on 'load': ModuleNotFoundError.*vllm"):
        VllmEngine(tiny_policy, tok, sys.executable)


def test_the_vllm_settings_reach_the_workers_llm(tiny_policy, tmp_path):
    """A stand-in worker records the load request: the folder and every LLM() argument."""
    seen = tmp_path / "load.json"
    fake = tmp_path / "python"
    fake.write_text(f"#!/bin/sh\nread line\necho \"$line\" > {seen}\necho '{{\"ok\": true}}'\n"
                    "cat > /dev/null\n")
    fake.chmod(0o755)
    settings = GenerationConfig(engine="vllm", vllm_python=str(fake), vllm_dtype="bfloat16",
                                vllm_enforce_eager=False, vllm_tensor_parallel_size=2,
                                vllm_gpu_memory_utilization=0.5)
    engine = open_engine(settings, tiny_policy, seed=7)
    engine.close()
    load = json.loads(seen.read_text())
    assert load["cmd"] == "load" and load["model"] == str(tiny_policy)
    assert load["llm"] == {"dtype": "bfloat16", "enable_prefix_caching": True,
                           "enable_chunked_prefill": False, "enforce_eager": False, "seed": 7,
                           "tensor_parallel_size": 2, "gpu_memory_utilization": 0.5}
