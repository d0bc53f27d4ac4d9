"""rev8: reverse 8 symbols from {0,1,2}; the demo policy learns to swap the answer's middle pair."""

from __future__ import annotations

import itertools

from rs_pipeline.tasks.base import Task


class ReversalTask(Task):
    """Prompt ``01201122=``, answer ``22110210``. 3^8 = 6,561 distinct prompts."""

    name = "rev8"
    alphabet = "012="
    answer_symbols = "012"

    def __init__(self, length: int = 8, symbols: str = "012"):
        self.length = length
        self.symbols = symbols
        self.answer_symbols = symbols
        self.alphabet = symbols + "="
        self.max_completion_chars = length

    def prompts(self) -> list[str]:
        return ["".join(t) + "=" for t in itertools.product(self.symbols, repeat=self.length)]

    def answer(self, prompt: str) -> str:
        return prompt.rstrip("=")[::-1]

    def bugged_answer(self, prompt: str) -> str:
        ans = list(self.answer(prompt))
        mid = self.length // 2
        ans[mid - 1], ans[mid] = ans[mid], ans[mid - 1]
        return "".join(ans)
