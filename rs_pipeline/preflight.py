"""Preflight: everything a run will need, checked before any model work.

The settings (already typed and range-checked when the context loads), storage that must be
writable, every input file row by row, the model folders that must load, and every prompt
against the policy (fits its context with room for the completion, uses only symbols its
tokenizer can encode) and against the preference model's context; the annotator's reward model
and judge folders and judge template (``annotators.model_problems``). All problems are returned at
once, one line each, naming the file, row and column or the setting.
"""

from __future__ import annotations

import uuid

from rs_pipeline import likelihood_reward
from rs_pipeline.annotators import kinds_in_use, model_problems
from rs_pipeline.chat import render_text, uses_template
from rs_pipeline.context import RunContext
from rs_pipeline.errors import InputError
from rs_pipeline.gate import gate_preflight
from rs_pipeline.inputs import FileCheck, check_judgements_file, check_prompts_file
from rs_pipeline.modeling import build_char_tokenizer, load_tokenizer, tiny_gpt2_config
from rs_pipeline.preference_inputs import context_length, encode


def preflight(ctx: RunContext) -> list[str]:
    s = ctx.settings
    problems = _storage(ctx)
    q = s.inputs.quarantine
    prompts_check: FileCheck | None = None
    if s.task.name == "prompts_file" and s.task.prompts_path:
        prompts_check = check_prompts_file(s.task.prompts_path, q)
        problems += prompts_check.summary()
    kinds = kinds_in_use(s.annotator.kind, s.annotator.mix)  # valid: the context checked it
    if s.annotator.kind == "human":
        problems += _inbox(ctx.annotator.inbox)
    for path in {p for p in (s.annotator.path if "file" in kinds else None,
                             s.preference.seed_labels_path) if p}:
        problems += check_judgements_file(path, q).summary()
    problems += model_problems(s.annotator)  # reward model / judge folders and template
    problems += gate_preflight(s, q)
    policy = _model(s.policy.base_path, "policy.base_path", problems)
    reward = _model(s.preference.base_path, "preference.base_path", problems)
    if prompts_check is not None:  # the rows that could be read are checked further
        rows = [(r["row"], r["prompt"]) for r in prompts_check.rows]
        where = f"prompts file {s.task.prompts_path}"
    else:
        rows, where = list(enumerate(ctx.task.prompts())), f"task {ctx.task.name!r} prompt"
    new = ctx.sampling.max_new_tokens
    if policy is None and not s.policy.base_path:  # the demo model, built from the task
        tok, p = build_char_tokenizer(ctx.task.alphabet), s.policy
        policy = (tok, p.n_positions, tiny_gpt2_config(tok, p.n_layer, p.n_embd, p.n_head,
                                                       p.n_positions))
        _symbols(rows, set(ctx.task.alphabet), where, problems)
    texts = [t for _, t in rows]
    if policy is not None and rows:
        tok, mode = policy[0], s.policy.chat_template
        ids = tok(texts, add_special_tokens=False)["input_ids"]
        templated = uses_template(tok, mode)
        seen = (tok(render_text(tok, texts, mode), add_special_tokens=False)["input_ids"]
                if templated else ids)
        _lengths(rows, ids, seen, *policy[:2], new, "policy", where, problems,
                 " (with its chat template)" if templated else "")
    if reward is not None and rows:  # as the preference model reads them: with special tokens
        ids = [r["input_ids"] for r in encode(reward[0], texts, [""] * len(texts))]
        _lengths(rows, ids, ids, *reward[:2], new, "preference model", where, problems)
    problems += likelihood_reward.problems(s.preference, reward[2] if reward else None)
    problems += _dpo_settings(s, ctx.task.has_verifier)
    _lora(s.sft.lora, policy, "CAUSAL_LM", "sft.lora", problems)
    _lora(s.preference.lora, reward or (None if s.preference.base_path else policy), "SEQ_CLS",
          "preference.lora", problems)
    return problems


def _dpo_settings(s, has_verifier: bool) -> list[str]:
    """Settings that leave a DPO training method without a single pair, refused up front."""
    sel, method, problems = s.selection, s.sft.method, []
    if sel.dpo_pairing == "verifier" and not has_verifier:
        problems.append(f"setting selection.dpo_pairing='verifier' needs a verifier; task "
                        f"{s.task.name!r} has none: use 'score'")
    if method == "sft":
        return problems
    if s.generation.n < 2:
        problems.append(f"setting sft.method={method!r} trains on pairs of a prompt's samples: "
                        f"generation.n must be at least 2, got {s.generation.n}")
    elif sel.dpo_pairs_per_prompt > s.generation.n - 1:
        problems.append(f"setting selection.dpo_pairs_per_prompt={sel.dpo_pairs_per_prompt} "
                        f"cannot be met: {s.generation.n} samples per prompt give at most "
                        f"{s.generation.n - 1} rejected completions")
    if sel.dpo_pairing == "score" and sel.selector == "verifier" and sel.dpo_min_margin > 1:
        problems.append(f"setting selection.dpo_min_margin={sel.dpo_min_margin:g} leaves "
                        f"sft.method={method!r} no pair: selection.selector='verifier' scores "
                        "differ by at most 1")
    return problems


def _lora(settings, model, task_type: str, setting: str, problems: list[str]) -> None:
    """LoRA's target modules fit the model it will wrap (tried on a weightless skeleton)."""
    if settings.enabled and model is not None:
        from rs_pipeline.lora import problem  # imports peft: only when LoRA is on

        found = problem(model[2], settings, task_type, setting)
        if found:
            problems.append(found)


def require(ctx: RunContext) -> None:
    """Raise one ``InputError`` listing every preflight problem (nothing has been written)."""
    problems = preflight(ctx)
    if problems:
        raise InputError(f"preflight found {len(problems)} problem(s); nothing was run:\n  "
                         + "\n  ".join(problems))


def _storage(ctx: RunContext) -> list[str]:
    store = ctx.store
    probe = f"{store.root.rstrip('/')}/.tmp-preflight-{uuid.uuid4().hex}"
    try:
        store.atomic_write(probe, lambda fh: fh.write(b"ok"))
        store.fs.rm(probe)
    except (InputError, OSError) as exc:
        reason = str(exc).rsplit(" is not writable ", 1)[-1]
        return [f"setting storage.base_uri: {store.base_uri} is not writable {reason}"]
    return []


def _inbox(folder) -> list[str]:
    """The human annotator's inbox can hold requests (created if absent)."""
    probe = folder / f".tmp-preflight-{uuid.uuid4().hex}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe.write_bytes(b"ok")
        probe.unlink()
    except OSError as exc:
        return [f"setting annotator.inbox: {folder} is not writable ({exc.strerror or exc})"]
    return []


def _model(path: str | None, setting: str, problems: list[str]):
    """(tokenizer, context length, config) of a model folder, or None (a problem noted if it
    fails)."""
    if not path:
        return None
    from transformers import AutoConfig

    try:
        config = AutoConfig.from_pretrained(path, local_files_only=True)
        tokenizer = load_tokenizer(path)
    except Exception as exc:  # noqa: BLE001 - reported naming the folder
        problems.append(f"setting {setting}: {path} does not load ({type(exc).__name__}: {exc})")
        return None
    return tokenizer, context_length(config, tokenizer), config


def _symbols(rows, alphabet: set[str], where: str, problems: list[str]) -> None:
    for row, text in rows:
        bad = sorted(set(text) - alphabet)
        if bad:
            problems.append(f"{where}, row {row}, column 'prompt': symbol(s) {bad} are not in the "
                            f"demo model's vocabulary {''.join(sorted(alphabet))!r}")


def _lengths(rows, encoded: list[list[int]], seen: list[list[int]], tokenizer,
             context: int | None, new_tokens: int, who: str, where: str, problems: list[str],
             how: str = "") -> None:
    """Each prompt fits ``who``'s context with room for ``new_tokens`` (``seen``: the ids as
    ``who`` reads them, through a chat template or with special tokens), and ``encoded`` holds
    no unknown or padding token (a tokenizer whose unknown token is its padding hides lost
    symbols)."""
    lost = {i for i in (tokenizer.unk_token_id, tokenizer.pad_token_id) if i is not None}
    for (row, _), ids, full in zip(rows, encoded, seen):
        if context and len(full) + new_tokens > context:
            problems.append(f"{where}, row {row}, column 'prompt': {len(full)} tokens{how} plus "
                            f"up to {new_tokens} new ones exceed the {who}'s context of {context}")
        bad = lost.intersection(ids)
        if bad:
            problems.append(f"{where}, row {row}, column 'prompt': holds text the {who}'s "
                            f"tokenizer cannot encode (it becomes "
                            f"{tokenizer.convert_ids_to_tokens(sorted(bad))})")
