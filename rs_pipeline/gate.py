"""The gate's judges: who compares a round's candidate with the champion, so the promotion never
rests on the preference model that selected the round's data alone.

``gate.judge`` names the judge; ``auto`` takes, in order, the task's verifier, then a
deterministic check the user wrote (``gate.hook``), then a held-back reward model
(``gate.reward_model_path``), then a model annotator (``annotator.kind`` ``reward_model`` or
``judge``; a file or a person cannot label fresh completions on the spot), and with none of
these the *seed* preference model (trained before any round, never refreshed), recording that it
fell back. Beside the judge, two checks of the round's preference model: its held-out pair
accuracy against ``gate.min_pair_acc`` and, with ``gate.pairs_path``, its accuracy on a labelled
pair set against the previous preference model's.
"""

from __future__ import annotations

import hashlib
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from rs_pipeline.annotators.reward_model import folder_problems
from rs_pipeline.config import PipelineConfig
from rs_pipeline.errors import InputError
from rs_pipeline.imports import import_object
from rs_pipeline.records import PairAccCheck
from rs_pipeline.tasks.base import Task

#: Annotator kinds that can label any pair of completions when asked (model annotators).
MODEL_ANNOTATORS = ("reward_model", "judge")
HOOK_SETTING = "setting gate.hook"


@dataclass(frozen=True)
class JudgeChoice:
    kind: str  # verifier | reward_model | hook | annotator | seed_preference
    note: str | None = None


@dataclass(frozen=True)
class JudgeComparison:
    """What the judge measured: ``metric`` of the candidate and of the champion (``win_rate``:
    the candidate's share of wins and one minus it); None where nothing could be measured."""

    judge: str
    metric: str
    candidate: float | None
    champion: float | None
    judge_id: str | None = None
    note: str | None = None

    def bar(self, tolerance: float) -> float | None:
        """The value the candidate must reach."""
        if self.metric == "win_rate":
            return 0.5 - tolerance
        return None if self.champion is None else self.champion - tolerance


def choose_judge(settings: PipelineConfig, task: Task) -> JudgeChoice:
    """The judge ``gate.judge`` names (``auto`` resolved as the module says)."""
    g = settings.gate
    if g.judge != "auto":
        return JudgeChoice(g.judge)
    if task.has_verifier:
        return JudgeChoice("verifier")
    if g.hook:
        return JudgeChoice("hook", "auto: no verifier; gate.hook is set")
    if g.reward_model_path:
        return JudgeChoice("reward_model", "auto: no verifier; gate.reward_model_path is set")
    if _model_annotator(settings):
        return JudgeChoice("annotator", f"auto: no verifier; annotator.kind is "
                                        f"{settings.annotator.kind!r}")
    return JudgeChoice("seed_preference", (
        f"auto: task {task.name!r} has no verifier and none of gate.hook, "
        "gate.reward_model_path or a model annotator is set: fell back to the seed preference "
        "model (trained before any round, never refreshed)"))


def _model_annotator(settings: PipelineConfig) -> bool:
    """Whether the annotator labels fresh pairs on the spot: a reward model, a judge, or a mix
    of only those (a file or a person cannot)."""
    from rs_pipeline.annotators.mixed import kinds_in_use

    try:
        return set(kinds_in_use(settings.annotator.kind, settings.annotator.mix)) <= set(
            MODEL_ANNOTATORS)
    except InputError:
        return False


def judge_setting_problems(settings: PipelineConfig, task: Task) -> list[str]:
    """Settings the chosen judge needs (cheap: checked when settings load)."""
    g, problems = settings.gate, []
    if g.judge == "verifier" and not task.has_verifier:
        problems.append(f"setting gate.judge='verifier' needs a task with a verifier; task "
                        f"{task.name!r} has none: use 'auto', 'hook', 'reward_model' or "
                        "'annotator'")
    if g.judge == "hook" and not g.hook:
        problems.append("setting gate.hook is required when gate.judge is 'hook'")
    if g.judge == "reward_model" and not g.reward_model_path:
        problems.append("setting gate.reward_model_path is required when gate.judge is "
                        "'reward_model'")
    if g.reward_model_path and not (Path(g.reward_model_path) / "config.json").is_file():
        problems.append(f"setting gate.reward_model_path: {g.reward_model_path} is not a Hugging "
                        "Face model folder (no config.json)")
    if g.pairs_path and not Path(g.pairs_path).is_file():
        problems.append(f"setting gate.pairs_path: file {g.pairs_path} does not exist")
    return problems


def gate_preflight(settings: PipelineConfig, quarantine: str) -> list[str]:
    """What the gate will load, tried before any model work: the hook imports and is callable,
    the reward model is a one-output sequence classifier, the pair set reads row by row."""
    g, problems = settings.gate, []
    if g.hook:
        try:
            load_hook(g.hook)
        except InputError as exc:
            problems.append(str(exc))
    if g.reward_model_path and (Path(g.reward_model_path) / "config.json").is_file():
        problems += folder_problems(g.reward_model_path, "gate.reward_model_path")
    if g.pairs_path and Path(g.pairs_path).is_file():
        from rs_pipeline.inputs import check_judgements_file

        problems += check_judgements_file(g.pairs_path, quarantine).summary()
    return problems


def load_hook(spec: str) -> Callable[[Sequence[str], Sequence[str]], list[float]]:
    """The callable ``package.module:function`` names (imported as plug-in tasks are); every
    failure is one ``InputError`` naming ``gate.hook``."""
    target = import_object(spec, HOOK_SETTING, "hook", "package.module:function")
    if not callable(target):
        raise InputError(f"{HOOK_SETTING}: {spec!r} is of type {type(target).__name__!r}, not a "
                         "callable (prompts, completions) -> list of floats")
    return target


def hook_code_version(spec: str) -> str:
    """A hash of the hook's source file: editing the hook is new gate work, not a reused one."""
    fn = load_hook(spec)
    try:
        source = inspect.getsourcefile(fn)
    except TypeError:
        source = None
    data = Path(source).read_bytes() if source and Path(source).is_file() else spec.encode()
    return hashlib.sha256(spec.encode() + data).hexdigest()[:16]


def hook_scores(spec: str, prompts: Sequence[str], completions: Sequence[str]) -> list[float]:
    """The hook's scores, checked: one finite number per completion."""
    try:
        out = list(load_hook(spec)(list(prompts), list(completions)))
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's code, reported naming it
        raise InputError(f"{HOOK_SETTING}: hook {spec!r} failed on the gate's completions "
                         f"({type(exc).__name__}: {exc})") from None
    if len(out) != len(completions):
        raise InputError(f"{HOOK_SETTING}: hook {spec!r} returned {len(out)} scores for "
                         f"{len(completions)} completions")
    for i, v in enumerate(out):
        if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
            raise InputError(f"{HOOK_SETTING}: hook {spec!r} returned {v!r} for completion {i}; "
                             "expected a finite number")
    return [float(v) for v in out]


def mean(values: Sequence[float]) -> float | None:
    return sum(values) / len(values) if values else None


def win_rate(hps: Sequence[float | None], candidate: Sequence[str],
             champion: Sequence[str]) -> tuple[float | None, int]:
    """The candidate's win rate over the champion: the mean ``hp`` (P(candidate preferred))
    over pairs the annotator labelled, identical completions counting 0.5 unasked; and how many
    pairs counted. None when none did."""
    counted = [0.5 if a == b else hp for hp, a, b in zip(hps, candidate, champion)
               if a == b or hp is not None]
    return mean(counted), len(counted)


def floor_check(pair_acc: float | None, floor: float,
                selector: str = "preference") -> PairAccCheck:
    """The round's preference model's held-out pair accuracy against ``gate.min_pair_acc``;
    not applied when the preference model took no part in selecting the data (``selection.
    selector: verifier``)."""
    if selector == "verifier":
        return PairAccCheck("floor", pair_acc, floor, True,
                            note="not applied: the verifier selected the data")
    if pair_acc is None:
        return PairAccCheck("floor", None, floor, True,
                            note="not applied: the preference model had no decided held-out pairs")
    return PairAccCheck("floor", pair_acc, floor, pair_acc >= floor)


def pairs_set_check(value: float | None, previous: float | None,
                    tolerance: float) -> PairAccCheck:
    """The round's preference model on ``gate.pairs_path`` against the previous one's accuracy
    on the same pairs, minus ``tolerance``."""
    if value is None or previous is None:
        return PairAccCheck("pairs_set", value, None, True, previous,
                            note="not applied: the pair set holds no decided pairs")
    bar = previous - tolerance
    return PairAccCheck("pairs_set", value, bar, value >= bar, previous)
