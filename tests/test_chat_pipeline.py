"""A user's chat LLM as the policy: bootstrap + two rounds through Dagster on the tiny Llama
chat policy (byte-level BPE, ChatML template, Qwen2-style EOS ids)."""

import dagster as dg
import pyarrow.parquet as pq
import pytest
import torch

from rs_pipeline.chat import prompt_kwargs
from rs_pipeline.config import merge
from rs_pipeline.defs.runner import run_bootstrap, run_round
from rs_pipeline.generation import SamplingParams, sample_expanded
from rs_pipeline.modeling import load_policy
from rs_pipeline.storage import AssetStore
from rs_pipeline.training import IGNORE, encode_completions
from tests.conftest import PROMOTE_ALL, make_home

TEMPLATE = "<|im_start|>user\n{}<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def chat_rounds(tiny_chat_policy, tmp_path_factory):
    settings = merge(PROMOTE_ALL, {"policy": {"base_path": str(tiny_chat_policy)}})
    with pytest.MonkeyPatch.context() as mp:
        home = make_home(tmp_path_factory.mktemp("chat_rounds") / "home", mp, settings)
        instance = dg.DagsterInstance.get()
        assert run_bootstrap(instance).success
        results = [run_round(instance) for _ in range(2)]
    assert [r.success for _, r in results] == [True, True]
    return home / "assets"


@pytest.mark.slow
def test_chat_policy_rounds_template_prompts_stop_at_end_of_turn_and_train_on_it(chat_rounds):
    storage = chat_rounds
    store = AssetStore(str(storage))
    for key in ("r0001", "r0002"):
        gens = pq.read_table(storage / "generations" / f"{key}.parquet").to_pydict()
        assert gens["rendered_prompt"] == [TEMPLATE.format(p) for p in gens["prompt"]]
        assert all(set(p) <= set("012=") for p in gens["prompt"])  # the raw prompt is kept
        assert not any("<|im_end|>" in c or "<|endoftext|>" in c for c in gens["completion"])
        assert sum(gens["finished"]) / len(gens["finished"]) > 0.9
    # the round-1 candidate (trained on templated targets ending with <|im_end|>) still ends
    # its turns with <|im_end|>, and it is what round 2 sampled from
    cand = store.read_record("policy_checkpoint", "r0001")
    assert store.read_record("sampling_policy", "r0002").checkpoint.id == cand.id
    model, tok = load_policy(storage / cand.path)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    sft = pq.read_table(storage / "sft_dataset" / "r0001.parquet").to_pydict()
    prompts = sft["prompt"][:16]
    rows = encode_completions(tok, prompts, sft["completion"][:16])
    for prompt, completion, row in zip(prompts, sft["completion"], rows):
        rendered = tok(TEMPLATE.format(prompt), add_special_tokens=False)["input_ids"]
        assert row["input_ids"][:len(rendered)] == rendered
        assert row["labels"][:len(rendered)] == [IGNORE] * len(rendered)
        assert row["labels"][len(rendered):] == tok(completion, add_special_tokens=False)[
            "input_ids"] + [im_end]
    kwargs = prompt_kwargs(model, tok, prompts)
    out = sample_expanded(model, torch.tensor(kwargs["prompt_ids"]), torch.zeros(16, dtype=torch.long),
                          SamplingParams(n=1, temperature=0.0, max_new_tokens=12),
                          kwargs["stop_ids"], tok.pad_token_id).tolist()
    assert sum(im_end in row for row in out) >= 14
    ev = store.read_record("round_eval", "r0002")
    assert ev.candidate.eval.greedy_acc is not None and ev.candidate.eval.n_prompts == 64
