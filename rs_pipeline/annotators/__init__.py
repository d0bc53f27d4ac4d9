"""Annotators: who labels a pair of completions with a soft preference ``hp`` in [0, 1].

``simulated`` (the task's verifier plus noise: the demo), ``file`` (judgements made
beforehand), ``reward_model`` (a sequence classifier's reward margin), ``judge`` (an LLM's A/B
answer probabilities) and ``mixed`` (a weighted average of these); every kind yields
``base.Label`` rows with their provenance.
"""

from __future__ import annotations

from dataclasses import replace

from rs_pipeline.annotators.base import Annotator, Label, Pair, hps, label_columns
from rs_pipeline.annotators.files import FileAnnotator
from rs_pipeline.annotators.human import HumanAnnotator
from rs_pipeline.annotators.judge import JudgeAnnotator
from rs_pipeline.annotators.mixed import MixedAnnotator, kinds_in_use, parse_mix
from rs_pipeline.annotators.reward_model import RewardModelAnnotator
from rs_pipeline.annotators.simulated import SimulatedAnnotator
from rs_pipeline.config import AnnotatorConfig, GenerationConfig
from rs_pipeline.errors import InputError
from rs_pipeline.ids import config_hash, file_version, folder_version
from rs_pipeline.tasks.base import Task

__all__ = ["Annotator", "FileAnnotator", "HumanAnnotator", "JudgeAnnotator", "Label",
           "MixedAnnotator", "Pair", "RewardModelAnnotator", "SimulatedAnnotator", "annotator_version", "hps",
           "kinds_in_use", "label_columns", "make_annotator", "model_problems"]


def make_annotator(settings: AnnotatorConfig, task: Task, seed: int,
                   quarantine: str = "drop", inbox: str | None = None,
                   generation: GenerationConfig | None = None) -> Annotator:
    """The annotator the ``annotator`` settings section names (``inbox``: the human
    annotator's folder when ``annotator.inbox`` is empty; ``generation``: the vLLM settings a
    judge on ``judge_engine: vllm`` runs with, the defaults when None)."""
    kind = settings.kind
    if kind == "human":
        inbox = settings.inbox or inbox
        if not inbox:
            raise InputError("setting annotator.inbox is required when annotator.kind is 'human'")
        return HumanAnnotator(inbox, settings.wait_hours, quarantine)
    if kind == "simulated":
        return SimulatedAnnotator(task, settings.label_noise, seed)
    if kind == "file":
        if not settings.path:
            raise InputError("setting annotator.path is required when annotator.kind is 'file'")
        return FileAnnotator(settings.path, quarantine)
    if kind == "reward_model":
        if not settings.reward_model_path:
            raise InputError("setting annotator.reward_model_path is required when the "
                             "'reward_model' annotator is used")
        return RewardModelAnnotator(settings.reward_model_path, settings.temperature)
    if kind == "judge":
        if not settings.judge_path:
            raise InputError("setting annotator.judge_path is required when the 'judge' "
                             "annotator is used")
        vllm = (replace(generation or GenerationConfig(), engine="vllm")
                if settings.judge_engine == "vllm" else None)
        return JudgeAnnotator(settings.judge_path, settings.judge_template, vllm=vllm, seed=seed)
    if kind == "mixed":
        return MixedAnnotator([(make_annotator(replace(settings, kind=name), task, seed,
                                               quarantine, generation=generation), weight)
                               for name, weight in parse_mix(settings.mix)])
    raise InputError(f"setting annotator.kind: unknown kind {kind!r} (known: simulated, file, "
                     "reward_model, judge, mixed)")


def annotator_version(settings: AnnotatorConfig) -> str:
    """A version of what the annotators in use read besides the pairs (a labels file, a reward
    model or judge folder, a judge template): a labelling step is redone when it changes."""
    try:
        kinds = kinds_in_use(settings.kind, settings.mix)
    except InputError:
        return ""
    parts = {"file": settings.path and file_version(settings.path),
             "reward_model": settings.reward_model_path and folder_version(
                 settings.reward_model_path),
             "judge": settings.judge_path and [folder_version(settings.judge_path), (
                 settings.judge_template and file_version(settings.judge_template))]}
    return config_hash([[k, parts[k]] for k in sorted(kinds) if k in parts])


def model_problems(settings: AnnotatorConfig) -> list[str]:
    """What the reward model and judge folders (and the judge template) the settings use lack,
    one line each (preflight: before any work)."""
    from rs_pipeline.annotators import judge, reward_model

    try:
        kinds = kinds_in_use(settings.kind, settings.mix)
    except InputError as exc:
        return str(exc).splitlines()
    problems = []
    if "reward_model" in kinds:
        problems += reward_model.folder_problems(settings.reward_model_path)
    if "judge" in kinds:
        problems += judge.folder_problems(settings.judge_path, settings.judge_template)
    return problems
