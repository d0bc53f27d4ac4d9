"""Chat policies: template rendering, stop ids, SFT targets, messages input, preflight."""

import json

import pytest
import torch
from tokenizers import processors

from rs_pipeline.chat import (
    as_messages,
    end_of_turn_id,
    messages_prompt,
    prompt_kwargs,
    render_prompts,
    render_text,
    stop_token_ids,
)
from rs_pipeline.config import config_from_dict
from rs_pipeline.context import RunContext
from rs_pipeline.generation import SamplingParams, decode_completion, sample_expanded, sample_prompts
from rs_pipeline.inputs import check_prompts_file
from rs_pipeline.modeling import load_policy
from rs_pipeline.preflight import preflight
from rs_pipeline.tasks import get_task
from rs_pipeline.testing_models import CHATML_TEMPLATE, build_bpe_chat_tokenizer
from rs_pipeline.training import IGNORE, encode_completions

PROMPTS = ["01201201=", "22110000="]


@pytest.fixture(scope="module")
def chat(tiny_chat_policy):
    model, tok = load_policy(tiny_chat_policy)
    return model, tok, tok.convert_tokens_to_ids("<|im_end|>")


def test_prompts_are_templated_with_the_generation_prompt(chat):
    _, tok, im_end = chat
    text = render_text(tok, PROMPTS[:1])[0]
    assert text == "<|im_start|>user\n01201201=<|im_end|>\n<|im_start|>assistant\n"
    ids = render_prompts(tok, PROMPTS[:1])[0]
    assert ids[-3:] == tok("<|im_start|>assistant\n", add_special_tokens=False)["input_ids"]
    assert ids.count(im_end) == 1 and tok.decode(ids) == text
    # 'off' (and the demo's template-less tokenizer) sees the prompt as it is
    assert render_prompts(tok, PROMPTS, "off") == tok(PROMPTS, add_special_tokens=False)["input_ids"]


def test_a_template_that_writes_bos_gets_no_second_one():
    tok = build_bpe_chat_tokenizer(PROMPTS * 10)
    tok.add_special_tokens({"bos_token": "<s>"})
    bos = tok.bos_token_id
    tok._tokenizer.post_processor = processors.TemplateProcessing(  # adds BOS, as Llama's does
        single="<s> $A", special_tokens=[("<s>", bos)])
    tok.chat_template = "{{ bos_token }}" + CHATML_TEMPLATE
    text = render_text(tok, PROMPTS[:1])[0]
    assert tok(text)["input_ids"][:2] == [bos, bos]  # the trap: encoding adds a second BOS
    ids = render_prompts(tok, PROMPTS[:1])[0]
    assert ids[0] == bos and ids.count(bos) == 1


def test_stop_ids_are_eos_generation_config_and_end_of_turn(chat):
    model, tok, im_end = chat
    eos = tok.eos_token_id
    assert model.generation_config.eos_token_id == [im_end, eos]
    assert stop_token_ids(tok, model) == sorted({eos, im_end})
    model_less = stop_token_ids(tok, None)  # found from the template alone
    assert model_less == sorted({eos, im_end}) and end_of_turn_id(tok) == im_end
    assert stop_token_ids(tok, None, "off") == [eos] and end_of_turn_id(tok, "off") == eos


def test_decode_cuts_at_the_first_of_several_stop_ids():
    class Tok:
        def decode(self, ids, skip_special_tokens):
            return ",".join(map(str, ids))

    assert decode_completion(Tok(), [5, 6, 2, 0, 7], [0, 2]) == ("5,6", 2, True)
    assert decode_completion(Tok(), [5, 6, 7], [0, 2]) == ("5,6,7", 3, False)
    assert decode_completion(Tok(), [5, 0, 2], 0) == ("5", 1, True)


def test_sampling_stops_at_the_end_of_turn_token(chat):
    model, tok, im_end = chat
    task = get_task("rev8")
    prompts = task.prompts()[5000:5064]
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=12)
    kwargs = prompt_kwargs(model, tok, prompts)
    out = sample_prompts(model, tok, prompts, params, lambda p, s: 0, **kwargs)
    assert all(out["finished"]) and min(out["num_tokens"]) >= 6
    assert all(len(c) == n and set(c) <= set("012")  # one token per digit, no stop token
               for c, n in zip(out["completion"], out["num_tokens"]))
    assert sum(task.verify(p, c) for p, c in zip(prompts, out["completion"])) > 0
    ids = torch.tensor(kwargs["prompt_ids"])
    raw = sample_expanded(model, ids, torch.zeros(len(prompts), dtype=torch.long), params,
                          kwargs["stop_ids"], tok.pad_token_id)
    ends = [raw[r, n].item() for r, n in enumerate(out["num_tokens"])]
    assert ends == [im_end] * len(prompts)  # it is <|im_end|> that ended them
    # stopping at EOS only, the model runs on past its end of turn
    eos_only = sample_prompts(model, tok, prompts, params, lambda p, s: 0,
                              prompt_ids=kwargs["prompt_ids"], stop_ids=[tok.eos_token_id])
    assert all(a > b for a, b in zip(eos_only["num_tokens"], out["num_tokens"]))


def test_sft_targets_mask_the_templated_prompt_and_end_with_im_end(chat):
    _, tok, im_end = chat
    rows = encode_completions(tok, PROMPTS, ["10210210", "00001122"])
    p = render_prompts(tok, PROMPTS[:1])[0]
    c = tok("10210210", add_special_tokens=False)["input_ids"]
    assert rows[0]["input_ids"] == p + c + [im_end]
    assert rows[0]["labels"] == [IGNORE] * len(p) + c + [im_end]
    off = encode_completions(tok, PROMPTS, ["10210210", "00001122"], "off")[0]
    assert off["labels"][-1] == tok.eos_token_id and off["labels"].count(IGNORE) == 9


def test_messages_rows_are_checked_and_rendered(chat, tmp_path):
    _, tok, _ = chat
    convo = [{"role": "system", "content": "Reverse it."}, {"role": "user", "content": "0120="}]
    rows = [{"messages": convo}, {"messages": [{"role": "user", "content": "2="}]},
            {"prompt": "11="}, {"messages": "0120="}, {"messages": [{"role": "user"}]},
            {"messages": [{"role": "user", "content": "1="}, {"role": "assistant", "content": "1"}]},
            {"prompt": "1=", "messages": convo}, {"messages": [{"role": 3, "content": "1="}]},
            {"messages": convo}]
    path = tmp_path / "p.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    check = check_prompts_file(path)
    assert [r["prompt"] for r in check.rows] == [messages_prompt(convo), "2=", "11="]
    assert check.quarantined == {"duplicate_prompts": 1}
    where = f"{path}, row"
    assert check.problems == [
        f"{where} 3, column 'messages': expected a non-empty list of {{role, content}}, got str "
        "'0120='",
        f"{where} 4, column 'messages': message 0: expected exactly the keys 'role' and "
        "'content', got ['role']",
        f"{where} 5, column 'messages': the last message must be the user's (the policy answers "
        "it), got role 'assistant'",
        f"{where} 6: holds both 'prompt' and 'messages': give one of them",
        f"{where} 7, column 'messages': message 0: 'role' must be non-empty text, got 3",
    ]
    assert as_messages(check.rows[0]["prompt"]) == convo
    assert render_text(tok, [check.rows[0]["prompt"]])[0] == (
        "<|im_start|>system\nReverse it.<|im_end|>\n<|im_start|>user\n0120=<|im_end|>\n"
        "<|im_start|>assistant\n")


def test_preflight_measures_the_templated_prompt(tiny_chat_policy, tmp_path):
    fits, too_long = "0" * 100 + "=", "0" * 112 + "="  # 113 tokens; 121 templated
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps({"prompt": p}) + "\n" for p in (fits, too_long, "1=")))
    settings = {"task": {"name": "prompts_file", "prompts_path": str(path)},
                "policy": {"base_path": str(tiny_chat_policy)},
                "generation": {"max_new_tokens": 9}}
    problems = preflight(RunContext(config_from_dict(settings), tmp_path / "home"))
    assert problems == [f"prompts file {path}, row 1, column 'prompt': 121 tokens (with its chat "
                        "template) plus up to 9 new ones exceed the policy's context of 128"]
    assert RunContext(config_from_dict(settings), tmp_path / "home").policy_is_chat()
    settings["policy"]["chat_template"] = "off"
    ctx = RunContext(config_from_dict(settings), tmp_path / "home")
    assert preflight(ctx) == [] and not ctx.policy_is_chat()  # export then writes plain rows
    assert not RunContext(config_from_dict({}), tmp_path / "home").policy_is_chat()  # the demo


def test_a_messages_prompts_file_flows_into_generation_rows(tiny_chat_policy, tmp_path):
    from rs_pipeline.steps import bootstrap, sampling

    system = {"role": "system", "content": "Reverse it."}
    rows = [{"messages": [system, {"role": "user", "content": p}]} for p in PROMPTS]
    rows += [{"prompt": p} for p in ("0000=", "1111=", "2222=")]
    path = tmp_path / "p.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    ctx = RunContext(config_from_dict({
        "task": {"name": "prompts_file", "prompts_path": str(path), "eval_size": 1,
                 "gate_size": 1, "round_size": 3},
        "policy": {"base_path": str(tiny_chat_policy)},
        "generation": {"n": 2, "max_new_tokens": 10}}), tmp_path / "home")
    pool, held, _ = bootstrap.prompt_sets(ctx)
    base, _ = bootstrap.base_policy(ctx, pool)
    gens, _ = sampling.generations(ctx, pool, base, "r0001")
    assert gens.num_rows == 2 * pool.num_rows
    g = gens.to_pydict()
    for prompt, rendered in zip(g["prompt"], g["rendered_prompt"]):
        messages = as_messages(prompt)
        assert rendered == "".join(f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n"
                                   for m in messages) + "<|im_start|>assistant\n"
    convo = [p for p in pool.column("prompt").to_pylist() if p.startswith("[")]
    assert convo and all(as_messages(p)[0] == system for p in convo)
