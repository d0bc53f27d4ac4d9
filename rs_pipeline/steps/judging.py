"""Steps that judge: the seed preference model, on-policy labelled pairs, the per-round refresh
of the preference model, and scoring every generation."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import pandas as pd
import pyarrow as pa
import torch

from rs_pipeline.annotators import SimulatedAnnotator, hps, human, label_columns
from rs_pipeline.annotators.human import RequestState, request_table
from rs_pipeline.context import RunContext
from rs_pipeline.ids import config_hash, derive_seed, seeded_rng, table_version
from rs_pipeline.lora import fine_tune
from rs_pipeline.modeling import likelihood_preference, load_preference, preference_from_policy
from rs_pipeline.pairs import (
    LabelledPair,
    active_pairs,
    distinct_pairs,
    heldout_split,
    split_pairs,
)
from rs_pipeline.preference import mean_and_spread, pair_accuracy, score_heads, train_preference
from rs_pipeline.records import PolicyCheckpoint, PreferenceCheckpoint
from rs_pipeline.resume import Resume, lazy
from rs_pipeline.schemas import make_table
from rs_pipeline.selection import conservative, selection_scores


def train_seed_preference(ctx: RunContext, base: PolicyCheckpoint, seed_table: pa.Table,
                          resume: Resume | None = None) -> tuple[PreferenceCheckpoint, dict]:
    """The first reward model: the policy's body (or your own sequence classifier) plus a
    one-output head (``preference.ensemble_heads`` outputs: a new head, each output trained on
    its own bootstrap), BT on the seed pairs' ``train`` split. Cached by config."""
    cfg, pc = ctx.settings, ctx.settings.preference
    key = config_hash([base.id, table_version(seed_table), cfg.seed, cfg.section_dict("preference")])
    record = ctx.checkpoints.cached("preference", key, PreferenceCheckpoint)
    if record is None:
        train, held = split_pairs(seed_table)
        start = pc.base_path or ctx.checkpoints.local_dir(base.path)
        if pc.reward == "likelihood":  # the causal LM itself (preflight: no heads, no LoRA)
            model, tok = likelihood_preference(start)
        else:
            model, tok = (_from_base(pc.base_path, pc.ensemble_heads, cfg.seed) if pc.base_path
                          else preference_from_policy(start, cfg.seed, heads=pc.ensemble_heads))
        model, metrics, lora = _train(model, tok, train, pc, resume, epochs=pc.seed_epochs,
                                      lr=pc.seed_learning_rate, seed=cfg.seed)
        model_id, path = ctx.checkpoints.save(model, tok, "preference", "rm")
        record = PreferenceCheckpoint(
            id=model_id, path=path, policy_init_id=base.id,
            labels_version=table_version(seed_table), train_pairs=len(train),
            train_loss=metrics["train_loss"], pair_acc=pair_accuracy(model, tok, held), lora=lora)
        ctx.checkpoints.remember("preference", key, record)
    return record, {"seed_pref/pair_acc": record.pair_acc,
                    "seed_pref/train_loss": record.train_loss}


def _from_base(path: str, heads: int, seed: int):
    """``preference.base_path`` as it is, or with a new seeded ``heads``-output head."""
    if heads == 1:
        return load_preference(path, heads=1)
    torch.manual_seed(seed)
    return load_preference(path, heads=heads)


def _train(model, tok, pairs: Sequence[LabelledPair], pc, resume: Resume | None, **args):
    """BT training of the preference model, through LoRA adapters with ``preference.lora``."""
    return fine_tune(model, pc.lora, "SEQ_CLS", "preference.lora", lambda m: train_preference(
        m, tok, pairs, batch_size=pc.batch_size, nll_weight=pc.nll_weight, **args,
        **(resume.checkpointing() if resume else {})))


def _picked_pairs(generations: pa.Table, n_pairs: int, seed: int, round_key: str,
                  scores: Sequence[float] | None = None,
                  head_scores: Sequence[Sequence[float]] | None = None, active_top_k: int = 4,
                  penalty: float = 0.0) -> dict[str, list]:
    """The round's pairs of distinct completions as columns: with ``head_scores`` (the previous
    model's every head) the active ones it is least sure of (``pairs.active_pairs``), else
    ``pairs.distinct_pairs`` (each prompt's top-``scores`` completion first, given scores)."""
    g = generations.to_pydict()
    pair_seed = derive_seed(seed, round_key, "pairs")
    picks = (active_pairs(g["prompt_id"], g["completion"], n_pairs, pair_seed, head_scores,
                          active_top_k, penalty) if head_scores is not None else
             distinct_pairs(g["prompt_id"], g["completion"], n_pairs, seed=pair_seed,
                            scores=scores))
    return {"prompt_id": [g["prompt_id"][a] for a, _ in picks],
            "prompt": [g["prompt"][a] for a, _ in picks],
            "completion_a": [g["completion"][a] for a, _ in picks],
            "completion_b": [g["completion"][b] for _, b in picks],
            "generation_id_a": [g["generation_id"][a] for a, _ in picks],
            "generation_id_b": [g["generation_id"][b] for _, b in picks],
            "policy_id": [g["policy_id"][a] for a, _ in picks]}


def _labelled(pairs: dict[str, list], labels: Sequence, kind: str, heldout_fraction: float,
              seed: int, round_key: str) -> pa.Table:
    """The ``preference_labels`` table of the pairs that got a label (a seeded share held out)."""
    keep = [i for i, lab in enumerate(labels) if lab is not None]
    return make_table("preference_labels", {
        **{k: [v[i] for i in keep] for k, v in pairs.items()},
        "round": [round_key] * len(keep),
        **label_columns([labels[i] for i in keep], kind),
        "split": heldout_split(len(keep), heldout_fraction, seed, round_key),
    })


def label_round_pairs(generations: pa.Table, annotator, n_pairs: int, heldout_fraction: float,
                      seed: int, round_key: str, **prior) -> pa.Table:
    """Pairs of distinct completions from this round's samples, labelled by the annotator.

    With ``scores`` (the previous preference model's), each prompt's first pair puts its
    top-scored completion against another (``pairs.distinct_pairs``); with ``head_scores`` (its
    every head's), the pairs are the active ones it is least sure of (``pairs.active_pairs``).
    Pairs the annotator cannot label (a file without them) are left out; a seeded share is
    marked ``heldout``.
    """
    pairs = _picked_pairs(generations, n_pairs, seed, round_key, **prior)
    triples = list(zip(pairs["prompt"], pairs["completion_a"], pairs["completion_b"]))
    labels = annotator.label(triples, salt=round_key)
    return _labelled(pairs, labels, annotator.source, heldout_fraction, seed, round_key)


def _prior(ctx: RunContext, generations: pa.Table, previous: PreferenceCheckpoint) -> dict:
    """What the previous preference model tells pair picking (``_picked_pairs`` keywords): its
    conservative score of every generation (``top_vs_other``), or every head's (``active``)."""
    pc, penalty = ctx.settings.preference, ctx.settings.selection.uncertainty_penalty
    if pc.pair_strategy == "random":
        return {}
    model, tok = ctx.load_preference(previous)
    heads = score_heads(model, tok, generations.column("prompt").to_pylist(),
                        generations.column("completion").to_pylist())
    if pc.pair_strategy == "active":
        return {"head_scores": heads.tolist(), "active_top_k": pc.active_top_k,
                "penalty": penalty}
    mean, spread = mean_and_spread(heads)
    return {"scores": conservative(pd.Series(mean), pd.Series(spread), penalty).tolist()}


def label_pairs(ctx: RunContext, generations: pa.Table, previous: PreferenceCheckpoint,
                round_key: str) -> tuple[pa.Table, dict]:
    """This round's labelled pairs; with ``top_vs_other`` the previous preference model picks
    each prompt's favourite (by its conservative score), so labels go where selection will look;
    with ``active`` its heads pick the pairs among the favourites they are least sure of."""
    pc = ctx.settings.preference
    table = label_round_pairs(generations, ctx.annotator, pc.pairs_per_round,
                              pc.heldout_fraction, ctx.settings.seed, round_key,
                              **_prior(ctx, generations, previous))
    ties = sum(h == 0.5 for h in table.column("hp").to_pylist())
    return table, {"pairs": table.num_rows, "ties": ties}


def human_labels(ctx: RunContext, generations: pa.Table, previous: PreferenceCheckpoint,
                 round_key: str, now=None) -> tuple[pa.Table | RequestState, dict]:
    """This round's pairs labelled by people (``annotators.human``): the pairs ``label_pairs``
    would pick are written to the inbox as a request (once); while no answer is there and the
    wait is not over, the request's state is returned (the round pauses). Past the wait, the
    table is empty (the refresh is skipped, the reason on record)."""
    pc, ann, seed = ctx.settings.preference, ctx.annotator, ctx.settings.seed
    now = now or human.utc_now()  # one clock reading: a request is never expired when written
    fingerprint = config_hash([round_key, table_version(generations), previous.id,
                               pc.pairs_per_round, pc.pair_strategy, seed])
    requests = ann.requested(round_key, fingerprint)
    if requests is None:
        pairs = _picked_pairs(generations, pc.pairs_per_round, seed, round_key,
                              **_prior(ctx, generations, previous))
        requests = request_table(round_key, pairs)
        ann.write_request(round_key, requests, fingerprint, now)
    state = ann.state(round_key, now)
    if not state.ready:
        return state, {"requested": requests.num_rows}
    pairs = {k: requests.column(k).to_pylist() for k in (
        "prompt_id", "prompt", "completion_a", "completion_b", "generation_id_a",
        "generation_id_b", "policy_id")}
    stats: dict = {"requested": requests.num_rows, "requested_at": state.requested_at}
    if state.labels_file is None:
        labels: list = [None] * requests.num_rows
        stats["skipped"] = state.describe(round_key)
    else:
        labels, found = ann.read_labels(round_key, requests, state.labels_file)
        stats.update(found)
    table = _labelled(pairs, labels, ann.source, pc.heldout_fraction, seed, round_key)
    ties = sum(h == 0.5 for h in table.column("hp").to_pylist())
    return table, {**stats, "pairs": table.num_rows, "ties": ties}


def _verifier_pairs(task, pairs: Sequence[LabelledPair]) -> list[LabelledPair]:
    """The same pairs labelled by the verifier alone (true accuracy, free of annotator noise)."""
    truth = hps(SimulatedAnnotator(task, label_noise=0.0).label([p[:3] for p in pairs]))
    return [(*p[:3], hp) for p, hp in zip(pairs, truth)]


def refresh_preference(ctx: RunContext, labels: pa.Table, previous: PreferenceCheckpoint,
                       earlier_labels: Sequence[pa.Table], round_key: str,
                       resume: Resume | None = None) -> tuple[PreferenceCheckpoint, dict]:
    """The previous preference model fine-tuned on this round's ``train`` pairs plus a seeded
    replay of earlier rounds' ``train`` pairs; pair accuracy on the ``heldout`` pairs (and, where
    the task has a verifier, against the verifier's own labels)."""
    cfg, pc = ctx.settings, ctx.settings.preference
    train, held = split_pairs(labels)
    if not train:
        why = getattr(ctx.annotator, "why_unlabelled", lambda key: None)(round_key)
        reason = (f"{why}: the previous preference model is kept" if why else
                  f"no labelled pairs of round {round_key}'s samples to learn from (the "
                  f"{ctx.annotator.source} annotator labelled {labels.num_rows}): the previous "
                  "preference model is kept")
        return dataclasses.replace(previous, skipped_reason=reason), {"pref/refresh_skipped": 1}
    replay = [p for t in earlier_labels for p in split_pairs(t)[0]]
    replay = seeded_rng(cfg.seed, round_key, "replay").sample(replay, min(len(replay),
                                                                          pc.replay_pairs))
    model, tok = ctx.load_preference(previous)
    model, metrics, lora = _train(model, tok, train + replay, pc, resume, epochs=pc.epochs,
                                  lr=pc.learning_rate, seed=cfg.seed)
    acc = pair_accuracy(model, tok, held)
    acc_true = (pair_accuracy(model, tok, _verifier_pairs(ctx.task, held))
                if ctx.task.has_verifier else None)
    model_id, path = ctx.checkpoints.save(model, tok, "preference", "rm")
    record = PreferenceCheckpoint(
        id=model_id, path=path, round=round_key, parent_id=previous.id,
        labels_version=table_version(labels), train_pairs=len(train), replay_pairs=len(replay),
        train_loss=metrics["train_loss"], pair_acc=acc, pair_acc_verifier=acc_true, lora=lora)
    return record, {"pref/pair_acc": acc, "pref/pair_acc_verifier": acc_true,
                    "pref/train_loss": metrics["train_loss"], "pref/train_pairs": len(train),
                    "pref/replay_pairs": len(replay), "pref/refresh_skipped": 0}


def score_generations(ctx: RunContext, generations: pa.Table, reward_model: PreferenceCheckpoint,
                      resume: Resume | None = None,
                      part: tuple[int, int] | None = None) -> tuple[pa.Table, dict]:
    """Every generation's reward under this round's preference model, its verifier score (if the
    task has one) and the score selection ranks by (in shards of prompts with ``resume``; with
    ``part=(i, k)`` only every k-th shard from the i-th, as one of k parallel steps)."""
    sel, task = ctx.settings.selection, ctx.task
    model = lazy(lambda: ctx.load_preference(reward_model))
    starts = prompt_starts(generations.column("prompt_id").to_pylist())

    def compute(first: int, last: int) -> pa.Table:
        rows = generations.slice(starts[first], starts[last] - starts[first]).to_pydict()
        rewards, spread = (mean_and_spread(score_heads(*model(), rows["prompt"],
                                                       rows["completion"]))
                           if rows["prompt"] else ([], []))
        verifier = ([task.verify(p, c) for p, c in zip(rows["prompt"], rows["completion"])]
                    if task.has_verifier else [None] * len(rewards))
        ranked = selection_scores(pd.Series(rewards, dtype="float64"),
                                  pd.Series(verifier, dtype="float64"), sel.selector,
                                  sel.mix_weight, pd.Series(spread, dtype="float64"),
                                  sel.uncertainty_penalty)
        keep = ("generation_id", "round", "prompt_id", "prompt", "sample_index", "completion",
                "policy_id")
        return make_table("scores", {**{k: rows[k] for k in keep},
                                     "reward_model_id": [reward_model.id] * len(rewards),
                                     "reward": rewards, "reward_spread": spread,
                                     "verifier_score": verifier,
                                     "selection_score": ranked.tolist()})

    n_prompts = len(starts) - 1
    if part is not None and resume is None:
        raise ValueError("a part of the scores is committed as shards: it needs resume")
    table = (resume.sharded(n_prompts, compute, part=part) if resume
             else compute(0, n_prompts))
    rewards, spread = (table.column(c).to_pylist() for c in ("reward", "reward_spread"))
    return table, {"score/mean_reward": sum(rewards) / max(1, len(rewards)),
                   "score/mean_spread": sum(spread) / max(1, len(spread))}


def prompt_starts(prompt_ids: Sequence[str]) -> list[int]:
    """Row offsets where each prompt's (contiguous) rows begin, plus the end offset."""
    starts = [i for i, p in enumerate(prompt_ids) if i == 0 or p != prompt_ids[i - 1]]
    return [*starts, len(prompt_ids)]

