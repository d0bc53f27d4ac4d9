"""The task interface: where prompts come from, how a completion is verified, how pairs are labelled."""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from collections.abc import Sequence


class Task(ABC):
    """A task the loop can improve on. Subclass it anywhere and name it in ``task.name``.

    The contract, by what a run uses:

    - always: ``prompts()``, every prompt in a stable order (the pool, eval and gate sets are
      split from it by ``seed``), and ``max_completion_chars`` (sizes generation when
      ``generation.max_new_tokens`` is 0). ``name`` appears in messages.
    - a verifier (``has_verifier`` True, the default): ``verify(prompt, completion)`` returning a
      score in [0, 1] (default: exact match against ``answer(prompt)``). The simulated
      annotator, the ``verifier``/``mix`` selectors and the gate's accuracy use it. A task
      without one sets ``has_verifier = False`` and needs ``annotator.kind: file`` with
      ``preference.seed_labels_path``, and ``selection.selector: preference``.
    - the demo model (no ``policy.base_path``): ``alphabet``, every character of prompts and
      completions (the character tokenizer is built from it), and pretraining data:
      ``answer(prompt)`` and ``bugged_answer(prompt)``, the systematic mistake the base policy
      learns for a share ``policy.bug_rate`` of its examples.
    - synthetic seed preference pairs (no ``preference.seed_labels_path``): ``seed_pairs``; the
      default mixes ``answer``, ``bugged_answer`` and ``wrong_answer`` (random corruptions drawn
      from ``answer_symbols``).

    ``task.name`` resolves to a task by built-in name, by import path ``package.module:Class``,
    or by a name an installed distribution registers under the entry-point group
    ``rs_pipeline.tasks`` (see ``rs_pipeline.tasks.registry``). The class is called with no
    arguments; point the name at a factory function to pass some.
    """

    name: str = "task"
    #: Characters the demo's character tokenizer must cover.
    alphabet: str = ""
    #: Longest completion in characters (the sampler adds one for end-of-sequence).
    max_completion_chars: int = 16

    @abstractmethod
    def prompts(self) -> list[str]:
        """Every prompt the task offers, in a stable order."""

    @property
    def has_verifier(self) -> bool:
        return True

    def verify(self, prompt: str, completion: str) -> float:
        """1.0 for a correct completion, 0.0 otherwise."""
        return float(completion == self.answer(prompt))

    def answer(self, prompt: str) -> str:
        raise NotImplementedError(f"task {self.name!r} has no reference answers")

    def bugged_answer(self, prompt: str) -> str:
        """The systematic mistake the demo policy is pretrained to make."""
        raise NotImplementedError(f"task {self.name!r} has no built-in pretraining data")

    def wrong_answer(self, prompt: str, rng: random.Random) -> str:
        """A random wrong completion of the right shape (for seed preference pairs)."""
        right = self.answer(prompt)
        chars = list(right)
        for _ in range(100):
            i = rng.randrange(len(chars))
            chars[i] = rng.choice(self.answer_symbols)
            if "".join(chars) != right:
                return "".join(chars)
        return right[::-1] + self.answer_symbols[0]

    answer_symbols: str = "0123456789"

    def pretrain_completion(self, prompt: str, rng: random.Random, bug_rate: float) -> str:
        return self.bugged_answer(prompt) if rng.random() < bug_rate else self.answer(prompt)

    def seed_pairs(self, prompts: Sequence[str], n: int, seed: int) -> list[tuple[str, str, str]]:
        """Synthetic (prompt, completion_a, completion_b) pairs for the first preference model.

        Mixes the three kinds of mistakes the policy will show: the systematic bug, random
        corruptions, and both against the right answer and against each other.
        """
        rng = random.Random(seed)
        pairs = []
        for _ in range(n):
            p = rng.choice(prompts)
            right, bug, wrong = self.answer(p), self.bugged_answer(p), self.wrong_answer(p, rng)
            if bug == right:
                bug = wrong
            a, b = rng.choice([(right, bug), (right, wrong), (right, bug), (bug, wrong)])
            if rng.random() < 0.5:
                a, b = b, a
            pairs.append((p, a, b))
        return pairs
