"""Labels from a reward model: ``hp = sigmoid((r_a - r_b) / temperature)``.

The reward model is a local one-output sequence-classifier folder with its own tokenizer; it
reads each (prompt, completion) as ``preference.score`` does for the pipeline's own preference
model. Its ``annotator_id`` is ``reward_model:`` plus the folder's content id, the same id the
checkpoint store gives a preference model (``modeling.weights_id``, prefix ``rm``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from rs_pipeline.annotators.base import Label, Pair
from rs_pipeline.errors import InputError

SETTING = "annotator.reward_model_path"


def sigmoid(x: float) -> float:
    if x >= 0:
        return 1.0 / (1.0 + math.exp(-x))
    e = math.exp(x)
    return e / (1.0 + e)


def folder_problems(path: str | Path | None, setting: str = SETTING) -> list[str]:
    """Why ``path`` is not a reward model this annotator can use (empty: none): it must hold a
    config of a sequence classifier with one output, and a tokenizer."""
    if not path:
        return [f"setting {setting} is required when the 'reward_model' annotator is used"]
    from transformers import AutoConfig

    from rs_pipeline.modeling import load_tokenizer

    if not (Path(path) / "config.json").is_file():
        return [f"setting {setting}: {path} is not a Hugging Face model folder (no config.json)"]
    problems = []
    try:
        config = AutoConfig.from_pretrained(str(path), local_files_only=True)
    except Exception as exc:  # noqa: BLE001 - reported naming the folder
        return [f"setting {setting}: {path} does not load ({type(exc).__name__}: {exc})"]
    archs = config.architectures or []
    if not any(a.endswith("ForSequenceClassification") for a in archs) or config.num_labels != 1:
        problems.append(f"setting {setting}: {path} is not a one-output sequence classifier "
                        f"(architectures {archs}, {config.num_labels} outputs): a reward model "
                        "scores each response with one number")
    try:
        load_tokenizer(path)
    except Exception as exc:  # noqa: BLE001 - reported naming the folder
        problems.append(f"setting {setting}: {path} has no tokenizer that loads "
                        f"({type(exc).__name__}: {exc})")
    return problems


class RewardModelAnnotator:
    """Soft labels from a reward model's margin; the model is loaded for each ``label`` call
    and released after it (a run context lives long; a reward model can be large)."""

    source = "reward_model"

    def __init__(self, path: str | Path, temperature: float = 1.0, batch_size: int = 1024):
        if not temperature > 0:
            raise InputError(f"setting annotator.temperature={temperature} must be > 0")
        self.path, self.temperature, self.batch_size = Path(path), temperature, batch_size
        self.annotator_id: str | None = None  # known once the model has been loaded

    def load(self):
        """The reward model and its tokenizer, checked first (one error naming the setting)."""
        from rs_pipeline.modeling import load_preference, weights_id

        problems = folder_problems(self.path)
        if problems:
            raise InputError("\n".join(problems))
        model, tok = load_preference(self.path)
        self.annotator_id = "reward_model:" + weights_id(model, "rm")
        return model, tok

    def rewards(self, pairs: Sequence[Pair]) -> tuple[list[float], list[float]]:
        """(r_a, r_b) per pair, all rows scored in one ``preference.score`` call."""
        from rs_pipeline.preference import score

        model, tok = self.load()
        prompts = [p for p, _, _ in pairs]
        r = score(model, tok, prompts + prompts, [a for _, a, _ in pairs] + [b for _, _, b in pairs],
                  batch_size=self.batch_size)
        return r[:len(pairs)], r[len(pairs):]

    def label(self, pairs: Sequence[Pair], salt: str = "") -> list[Label | None]:
        if not pairs:
            return []
        ra, rb = self.rewards(pairs)
        return [Label(sigmoid((a - b) / self.temperature), self.annotator_id)
                for a, b in zip(ra, rb)]
