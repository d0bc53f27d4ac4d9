"""How the preference model reads text: the demo's ids, text-pair encoders, decoders without a
pad token, explicit truncation, and preflight counting special tokens."""

import pytest
import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2ForSequenceClassification,
    PreTrainedTokenizerFast,
)

from rs_pipeline.config import config_from_dict, merge
from rs_pipeline.context import RunContext
from rs_pipeline.errors import InputError
from rs_pipeline.modeling import load_preference, preference_from_policy
from rs_pipeline.preference import score
from rs_pipeline.preference_inputs import context_length, encode, pad_rows
from rs_pipeline.preflight import preflight
from tests.conftest import TINY


def test_demo_rows_are_prompt_completion_eos_with_the_same_ids_as_before(tiny_policy):
    model, tok = preference_from_policy(tiny_policy, seed=0)
    rows = encode(tok, ["0120=", "2="], ["0210", ""], context_length(model.config, tok))
    # <pad>=0 <eos>=1 '0'=2 '1'=3 '2'=4 '='=5: prompt, completion, EOS; no segment ids
    assert rows == [{"input_ids": [2, 3, 4, 2, 5, 2, 4, 3, 2, 1]}, {"input_ids": [4, 5, 1]}]
    batch = pad_rows(rows, tok.pad_token_id)
    assert batch["input_ids"].tolist() == [[2, 3, 4, 2, 5, 2, 4, 3, 2, 1],
                                           [4, 5, 1, 0, 0, 0, 0, 0, 0, 0]]
    assert batch["attention_mask"].sum(1).tolist() == [10, 3] and "token_type_ids" not in batch
    assert context_length(model.config, tok) == 64


def test_decoder_rows_longer_than_the_context_lose_the_completion_tail_not_the_eos(tiny_policy):
    _, tok = preference_from_policy(tiny_policy, seed=0)
    rows = encode(tok, ["01="], ["0121012"], max_length=6)
    assert rows == [{"input_ids": [2, 3, 5, 2, 3, 1]}]
    with pytest.raises(InputError, match="prompt at row 1: 6 tokens plus 1 special"):
        encode(tok, ["0=", "01201="], ["1", "1"], max_length=7)


def test_text_pair_encoders_read_cls_prompt_sep_completion_sep(minilm_base):
    model, tok = load_preference(minilm_base)
    assert context_length(model.config, tok) == 512
    row = encode(tok, ["How was it?"], ["It was great."], 512)[0]
    assert tok.convert_ids_to_tokens(row["input_ids"]) == [
        "[CLS]", "how", "was", "it", "?", "[SEP]", "it", "was", "great", ".", "[SEP]"]
    assert row["token_type_ids"] == [0] * 6 + [1] * 5
    cut = encode(tok, ["How was it?"], ["It was great."], max_length=8)[0]
    assert tok.convert_ids_to_tokens(cut["input_ids"]) == [
        "[CLS]", "how", "was", "it", "?", "[SEP]", "it", "[SEP]"]
    with pytest.raises(InputError, match="3 special ones leave no room"):
        encode(tok, ["How was it?"], ["fine"], max_length=7)
    batch = pad_rows([row, cut], tok.pad_token_id)
    assert batch["token_type_ids"].tolist()[1] == [0] * 6 + [1] * 2 + [0] * 3


def _decoder_without_pad(folder):
    """A tiny GPT-2 classifier whose tokenizer has EOS but no pad token (like GPT-2's own)."""
    vocab = {"<eos>": 0, **{c: i + 1 for i, c in enumerate("abc=")}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<eos>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<eos>")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=5, n_positions=32, n_embd=16, n_layer=1, n_head=2, num_labels=1,
                        eos_token_id=0, bos_token_id=0)
    GPT2ForSequenceClassification(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_decoder_without_pad_pads_with_eos_and_pools_the_last_real_token(tmp_path):
    model, tok = load_preference(_decoder_without_pad(tmp_path))
    assert tok.pad_token_id == tok.eos_token_id == model.config.pad_token_id == 0
    prompts, completions = ["ab=", "a=", "abcab="], ["cba", "", "ba"]
    rows = encode(tok, prompts, completions, 32)
    assert rows[0] == {"input_ids": [1, 2, 4, 3, 2, 1]}  # no EOS: it would be read as padding
    together = score(model, tok, prompts, completions)
    alone = [score(model, tok, [p], [c])[0] for p, c in zip(prompts, completions)]
    assert together == pytest.approx(alone, abs=1e-6)  # right padding never moves the pooled token
    assert len(set(together)) == 3


def test_preflight_counts_the_preference_models_special_tokens(minilm_base, tmp_path):
    _, tok = load_preference(minilm_base)
    demo = RunContext(config_from_dict(TINY), tmp_path / "home")
    prompts, new = demo.task.prompts(), demo.sampling.max_new_tokens
    longest = max(len(ids) for ids in tok(prompts, add_special_tokens=False)["input_ids"])
    # a context that holds the longest prompt and its new tokens, but not with [CLS] [SEP] [SEP]
    BertForSequenceClassification(BertConfig(
        vocab_size=tok.vocab_size, hidden_size=8, num_hidden_layers=1, num_attention_heads=1,
        intermediate_size=8, max_position_embeddings=longest + new, num_labels=1)).save_pretrained(
        tmp_path / "rm")
    tok.save_pretrained(tmp_path / "rm")
    settings = config_from_dict(merge(TINY, {"preference": {"base_path": str(tmp_path / "rm")}}))
    problems = preflight(RunContext(settings, tmp_path / "home"))
    assert not [p for p in problems if "policy's context" in p]
    problems = [p for p in problems if "preference model's context" in p]
    assert problems and all(f"exceed the preference model's context of {longest + new}" in p
                            for p in problems)
