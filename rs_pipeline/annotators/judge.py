"""Labels from a judge LLM: its next-token probabilities of answering "A" or "B".

The judge is a local causal-LM folder with its own tokenizer. Each pair becomes a judge prompt
(``annotator.judge_template``, else ``DEFAULT_TEMPLATE``), rendered through the judge's chat
template as one user turn with the generation prompt when it has one (``chat.render_text``).
``q = p_A / (p_A + p_B)`` is read after that prompt, once with (a as A, b as B) and once the
other way round; ``hp = (q1 + 1 - q2) / 2`` cancels the judge's position bias, so
``hp(a, b) + hp(b, a) == 1``.

The answer tokens are the ones the judge's tokenizer writes for "A" / " A" (and "B" / " B")
right after the rendered prompt; every form that is one token spelling the letter counts (their
probabilities add up). Scoring runs through the engine interface
(``Engine.next_token_logprobs``): on the ``transformers`` engine in the step's process, or with
``annotator.judge_engine: vllm`` in a vLLM worker (the ``generation.vllm_*`` settings; vLLM
gathers the full-vocabulary log-softmax at exactly the answer tokens). Either way the judge's
weights are loaded here once, to hash them into ``annotator_id`` and read its context length.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Sequence
from pathlib import Path

from rs_pipeline.annotators.base import Label, Pair
from rs_pipeline.annotators.reward_model import sigmoid
from rs_pipeline.errors import InputError

SETTING, TEMPLATE_SETTING = "annotator.judge_path", "annotator.judge_template"
PLACEHOLDERS = ("prompt", "a", "b")
DEFAULT_TEMPLATE = (
    "Which response answers the prompt better?\n\n"
    "[Prompt]\n{prompt}\n\n[Response A]\n{a}\n\n[Response B]\n{b}\n\n"
    "Answer with the single letter A or B.\nBetter response:")
_FIELD = re.compile(r"\{(prompt|a|b)\}")


def template_text(path: str | Path | None) -> str:
    """The judge template: the file at ``path`` (checked for every placeholder), else the
    built-in one."""
    if not path:
        return DEFAULT_TEMPLATE
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise InputError(f"setting {TEMPLATE_SETTING}: {path} cannot be read "
                         f"({type(exc).__name__}: {exc})") from None
    missing = [f"{{{p}}}" for p in PLACEHOLDERS if f"{{{p}}}" not in text]
    if missing:
        raise InputError(f"setting {TEMPLATE_SETTING}: {path} lacks the placeholder(s) "
                         f"{', '.join(missing)} (it needs {{prompt}}, {{a}} and {{b}})")
    return text


def render(template: str, prompt: str, a: str, b: str) -> str:
    """The template with its placeholders filled in one pass (braces in the texts stay)."""
    values = {"prompt": prompt, "a": a, "b": b}
    return _FIELD.sub(lambda m: values[m.group(1)], template)


def _encode(tokenizer, texts: Sequence[str], templated: bool) -> list[list[int]]:
    return tokenizer(list(texts), add_special_tokens=not templated)["input_ids"]


def answer_ids(tokenizer, rendered: str, templated: bool) -> tuple[tuple[int, ...], ...]:
    """The token ids the judge writes first for the answers "A" and "B" right after
    ``rendered``: for each letter, every form ("A", " A") whose first new token spells the
    letter alone. An InputError if a letter has none or the two share one."""
    base = _encode(tokenizer, [rendered], templated)[0]
    found = []
    for letter in "AB":
        ids = set()
        for form in (letter, " " + letter):
            full = _encode(tokenizer, [rendered + form], templated)[0]
            if full[:len(base)] == base and len(full) > len(base) and \
                    tokenizer.decode([full[len(base)]]).strip() == letter:
                ids.add(full[len(base)])
        if not ids:
            raise InputError(f"setting {SETTING}: the judge's tokenizer does not write the answer "
                             f"{letter!r} as one token after the judge prompt")
        found.append(tuple(sorted(ids)))
    if set(found[0]) & set(found[1]):
        raise InputError(f"setting {SETTING}: the judge's tokenizer writes 'A' and 'B' with the "
                         "same token")
    return tuple(found)


def folder_problems(path: str | Path | None, template_path: str | None) -> list[str]:
    """Why the judge settings cannot work (empty: none): the folder must hold a model config
    and a tokenizer, the template every placeholder, and the tokenizer must write A and B."""
    problems = []
    template = None
    try:
        template = template_text(template_path)
    except InputError as exc:
        problems.append(str(exc))
    if not path:
        return [f"setting {SETTING} is required when the 'judge' annotator is used", *problems]
    if not (Path(path) / "config.json").is_file():
        return [f"setting {SETTING}: {path} is not a Hugging Face model folder (no config.json)",
                *problems]
    from transformers import AutoConfig

    from rs_pipeline.chat import render_text, uses_template
    from rs_pipeline.modeling import load_tokenizer

    try:
        AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - reported naming the folder
        problems.append(f"setting {SETTING}: {path} does not load ({type(exc).__name__}: {exc})")
    try:
        tok = load_tokenizer(path)
    except Exception as exc:  # noqa: BLE001 - reported naming the folder
        return [*problems, f"setting {SETTING}: {path} has no tokenizer that loads "
                           f"({type(exc).__name__}: {exc})"]
    if template is not None:
        try:
            rendered = render_text(tok, [render(template, "1+1=", "2", "3")])[0]
            answer_ids(tok, rendered, uses_template(tok))
        except InputError as exc:
            problems.append(str(exc))
    return problems


def _logsumexp(xs: Sequence[float]) -> float:
    m = max(xs)
    return m + math.log(sum(math.exp(x - m) for x in xs))


class JudgeAnnotator:
    """Soft labels from a judge LLM's A/B next-token probabilities, both orders averaged. The
    judge is loaded for each ``label`` call and released after it."""

    source = "judge"

    def __init__(self, path: str | Path, template_path: str | None = None, batch_size: int = 16,
                 vllm=None, seed: int = 0):
        """``vllm``: the generation settings of a vLLM worker to judge in (None: transformers)."""
        self.path, self.batch_size, self.vllm, self.seed = Path(path), batch_size, vllm, seed
        self.template = template_text(template_path)
        self.template_hash = hashlib.sha256(self.template.encode()).hexdigest()[:8]
        self.annotator_id: str | None = None  # known once the judge has been loaded
        self.context: int | None = None  # the judge's context length, idem

    def engine(self):
        """The judge on its engine (its weights hashed for ``annotator_id``)."""
        from rs_pipeline.engines import TransformersEngine, start_vllm
        from rs_pipeline.modeling import load_policy, weights_id
        from rs_pipeline.preference_inputs import context_length

        problems = folder_problems(self.path, None)
        if problems:
            raise InputError("\n".join(problems))
        model, tok = load_policy(self.path)
        self.annotator_id = f"judge:{weights_id(model, 'pol')}:tpl-{self.template_hash}"
        self.context = context_length(model.config, tok)
        if self.vllm is None:
            return TransformersEngine(model, tok, self.batch_size)
        del model  # the worker loads its own copy
        return start_vllm(self.vllm, self.path, tok, self.seed)

    def preferences(self, engine, pairs: Sequence[Pair]) -> list[float]:
        """``q = p_A / (p_A + p_B)`` per (prompt, shown as A, shown as B), on ``engine`` (from
        ``engine()``)."""
        from rs_pipeline.chat import render_text, uses_template

        tok = engine.tokenizer
        templated = uses_template(tok)
        texts = render_text(tok, [render(self.template, *p) for p in pairs])
        ids = _encode(tok, texts, templated)
        limit = self.context
        for i, row in enumerate(ids):
            if limit and len(row) > limit:
                raise InputError(f"setting {SETTING}: the judge prompt of pair {i} has {len(row)} "
                                 f"tokens, more than the judge's context of {limit}")
        groups: dict[tuple, list[int]] = {}  # rows whose answers are the same tokens
        for i, text in enumerate(texts):
            groups.setdefault(answer_ids(tok, text, templated), []).append(i)
        q = [0.0] * len(pairs)
        for (a_ids, b_ids), rows in groups.items():
            logps = engine.next_token_logprobs([ids[i] for i in rows], [*a_ids, *b_ids])
            for i, lp in zip(rows, logps):
                q[i] = sigmoid(_logsumexp(lp[:len(a_ids)]) - _logsumexp(lp[len(a_ids):]))
        return q

    def label(self, pairs: Sequence[Pair], salt: str = "") -> list[Label | None]:
        if not pairs:
            return []
        engine = self.engine()
        try:
            q = self.preferences(engine, [*pairs, *((p, b, a) for p, a, b in pairs)])
        finally:
            engine.close()
        n = len(pairs)
        return [Label((q1 + 1.0 - q2) / 2.0, self.annotator_id) for q1, q2 in zip(q[:n], q[n:])]
