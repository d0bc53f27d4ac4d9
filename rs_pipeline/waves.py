"""Adaptive best-of-N: which prompts get the next wave of samples (no models here).

Plain best-of-N draws N samples for every prompt. With ``generation.waves`` (e.g. ``2,2,4``)
every prompt first gets the first wave; after each wave the samples are scored and a prompt
*stops* once its best is good enough:

- ``generation.stop_score``: its best standardised reward reaches this. Rewards are
  standardised once per round, by the mean and standard deviation of the first wave's rewards
  over all the round's prompts (so a z of 1 is "one spread above a typical first sample");
- ``generation.stop_margin``: its best standardised reward beats its runner-up (the best
  *other distinct* completion; copies of the best score exactly the same) by at least this. A
  preference model that ranks a prompt's own answers well but is not calibrated across prompts
  (rev8's) decides within a prompt, not against a round-wide bar;
- ``generation.stop_unanimous``: it has at least this many samples and they are all the same
  completion (they score exactly alike). A policy that says the same thing k times is sure of
  it, and more samples rarely differ (the adaptive-consistency idea);
- ``generation.stop_loser_quantile``: its best standardised reward is above this quantile of
  the round's *losers* so far (samples that scored below a distinct completion of their own
  prompt): an empirical bar for "better than the wrong answers" that needs no calibration of
  the model's scale across prompts, for prompts whose samples all agree;
- ``generation.stop_coverage``: the chance that the rest of its plain budget (``n`` minus the
  samples drawn) draws any completion not seen yet is at most this: ``1 - S ** left``, ``S``
  the total probability, under the distribution they were sampled from, of its distinct
  completions so far (the policy teacher-forced on them: ``generation.sampled_logprobs``).
  Plain best-of-N would then, with at least that certainty, choose among the very completions
  already scored, so stopping changes nothing. It needs no reward at all, and it stops what
  the reward rules cannot: a peaked policy whose samples agree, or split between two answers
  that together hold nearly all its mass;
- ``generation.stop_gain``: the expected gain of the next wave is below this. A prompt's
  standardised rewards are modelled as normal around the mean of those seen, with a spread
  shrunk between its own and the round's pooled within-prompt spread (from the first wave);
  the gain is ``E[max(0, best of k more draws - best so far)]``, in standardised units.

The budget is the plain path's (``generation.n`` samples per prompt, in all): a wave goes to
the prompts still open; when it does not fit in what is left, it goes to those with the largest
expected gain (ties: earlier prompt), whole waves only. Sample ``j`` of a prompt always uses the
plain path's seed for index ``j``, so adaptive samples are plain best-of-N's samples for the same
indices (a wave past ``n`` draws the indices a larger plain N would).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from rs_pipeline.errors import InputError

#: Prior weight (in samples) of the round's pooled within-prompt spread in a prompt's spread.
PRIOR_SAMPLES = 2.0
_GRID = 257  # points of the gain integral


def parse_waves(text: str, n: int, setting: str = "generation.waves") -> list[int]:
    """Wave sizes from ``'2,2,4'``; empty text: no waves (plain best-of-N). One ``InputError``
    naming ``setting`` when a size is not a positive integer or the first wave exceeds ``n``
    (the budget is ``n`` samples per prompt and every prompt gets the first wave)."""
    text = (text or "").strip()
    if not text:
        return []
    try:
        sizes = [int(part) for part in text.split(",")]
    except ValueError:
        raise InputError(f"setting {setting}: {text!r} is not comma-separated wave sizes "
                         "(e.g. '2,2,4')") from None
    if any(s < 1 for s in sizes):
        raise InputError(f"setting {setting}: wave sizes must be >= 1, got {text!r}")
    if sizes[0] > n:
        raise InputError(f"setting {setting}: the first wave ({sizes[0]}) exceeds "
                         f"generation.n ({n}), the budget of samples per prompt")
    return sizes


@dataclass(frozen=True)
class Scale:
    """The round's standardisation (from the first wave): reward mean and spread, and the
    pooled within-prompt spread in standardised units."""

    mean: float
    std: float
    within: float

    @classmethod
    def of(cls, groups: Sequence[Sequence[float]]) -> Scale:
        flat = [r for g in groups for r in g]
        mean = sum(flat) / len(flat)
        std = math.sqrt(sum((r - mean) ** 2 for r in flat) / len(flat)) or 1.0
        dev = [(r - sum(g) / len(g)) ** 2 for g in groups if len(g) > 1 for r in g]
        dof = sum(len(g) - 1 for g in groups if len(g) > 1)
        within = math.sqrt(sum(dev) / dof) / std if dof else 1.0
        return cls(mean, std, within or 1e-6)

    def z(self, rewards: Sequence[float]) -> list[float]:
        return [(r - self.mean) / self.std for r in rewards]


def expected_gain(z: Sequence[float], k: int, within: float) -> float:
    """``E[max(0, max of k draws - max(z))]`` with draws ~ Normal(mean(z), s), ``s`` the
    prompt's spread shrunk towards ``within`` (``PRIOR_SAMPLES`` samples of weight)."""
    import torch

    n, best = len(z), max(z)
    m = sum(z) / n
    ss = sum((v - m) ** 2 for v in z)
    s = math.sqrt((ss + PRIOR_SAMPLES * within ** 2) / (n - 1 + PRIOR_SAMPLES))
    top = max(best, m) + 8 * s
    if top <= best:
        return 0.0
    x = torch.linspace(best, top, _GRID, dtype=torch.float64)
    tail = 1 - torch.special.ndtr((x - m) / s) ** k  # P(max of k draws > x)
    return float(torch.trapezoid(tail, x))


def margin(z: Sequence[float], tie: float = 1e-6) -> float:
    """The best value minus the best one below it by more than ``tie`` (0.0 when every value
    ties with the best: copies of one completion)."""
    best = max(z)
    below = [v for v in z if v < best - tie]
    return best - max(below) if below else 0.0


@dataclass
class WavePlan:
    """Per prompt: its standardised rewards so far, and whether it stopped."""

    sizes: list[int]
    budget: int
    stop_score: float | None
    stop_gain: float | None
    stop_margin: float | None = None
    stop_unanimous: int | None = None
    stop_loser_quantile: float | None = None
    stop_coverage: float | None = None
    scale: Scale | None = None

    def __post_init__(self):
        self.z: dict[int, list[float]] = {}
        self.seen: dict[int, dict[str, float]] = {}  # per prompt: completion -> probability
        self.stopped: set[int] = set()
        self.spent = 0
        self.n = 0  # plain best-of-N's samples per prompt (the budget over the prompts)

    def drawn(self, p: int) -> int:
        return len(self.z.get(p, ()))

    def chosen(self, wave: int, prompts: int) -> list[int]:
        """Prompt positions that get wave ``wave`` (0-based), in position order."""
        size = self.sizes[wave]
        if wave == 0:
            return list(range(prompts))
        open_ = [p for p in range(prompts) if p not in self.stopped]
        fit = (self.budget - self.spent) // size
        if fit < len(open_):
            need = {p: expected_gain(self.z[p], size, self.scale.within) for p in open_}
            open_ = sorted(sorted(open_, key=lambda p: (-need[p], p))[:fit])
        return open_

    def add(self, wave: int, rewards: dict[int, list[float]],
            logprobs: dict[int, dict[str, float]] | None = None) -> int:
        """Record a wave's raw rewards (per prompt, in sample order) and, for
        ``stop_coverage``, the sampling log-probability of each completion it drew (per
        prompt: completion -> log-probability); returns how many prompts stop after it."""
        if wave == 0:
            self.scale = Scale.of(list(rewards.values()))
            self.n = self.budget // max(len(rewards), 1)
        for p, r in rewards.items():
            self.z.setdefault(p, []).extend(self.scale.z(r))
            self.spent += len(r)
        for p, drawn in (logprobs or {}).items():
            self.seen.setdefault(p, {}).update({c: math.exp(lp) for c, lp in drawn.items()})
        if wave + 1 >= len(self.sizes):
            return 0
        k = self.sizes[wave + 1]
        bar = self._loser_bar()
        stop = {p for p in rewards if self._done(self.z[p], k) or self._covered(p)
                or (bar is not None and max(self.z[p]) > bar)}
        self.stopped |= stop
        return len(stop)

    def _covered(self, p: int) -> bool:
        """``stop_coverage``: the rest of prompt ``p``'s plain budget would, with probability at
        least ``1 - stop_coverage``, draw only completions it has already seen."""
        if self.stop_coverage is None:
            return False
        mass = min(sum(self.seen.get(p, {}).values()), 1.0)
        left = max(self.n - self.drawn(p), 0)
        return 1.0 - mass ** left <= self.stop_coverage

    def _loser_bar(self) -> float | None:
        """The ``stop_loser_quantile`` quantile of the round's *losers* so far: every sample that
        scored below a distinct completion of its own prompt (by more than a tie). Where the
        model ranks a prompt's answers well, losers are wrong answers, so a best above most of
        them is likely right even when the prompt's samples all agree. None until there are
        losers (or with the rule off)."""
        if self.stop_loser_quantile is None:
            return None
        losers = [v for z in self.z.values() for v in z if v < max(z) - 1e-6]
        if not losers:
            return None
        import torch

        return float(torch.quantile(torch.tensor(losers, dtype=torch.float64),
                                    self.stop_loser_quantile))

    def _done(self, z: list[float], k: int) -> bool:
        if self.stop_score is not None and max(z) >= self.stop_score:
            return True
        if self.stop_margin is not None and margin(z) >= self.stop_margin:
            return True
        if self.stop_unanimous and len(z) >= self.stop_unanimous and margin(z) == 0.0:
            return True
        return self.stop_gain is not None and expected_gain(z, k, self.scale.within) < self.stop_gain


def wave_problems(g) -> list[str]:
    """What is wrong with the wave settings of ``GenerationConfig`` ``g`` (one line each)."""
    try:
        sizes = parse_waves(g.waves, g.n)
    except InputError as exc:
        return [str(exc)]
    if sizes and g.engine != "transformers":
        return [f"setting generation.waves: adaptive best-of-N runs on the 'transformers' engine "
                f"only (generation.engine is {g.engine!r}; vLLM would seed a wave's samples "
                "differently from plain best-of-N's): leave generation.waves empty"]
    return []
