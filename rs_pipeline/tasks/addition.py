"""Two-digit addition, answer written reversed; the demo policy learns to drop every carry."""

from __future__ import annotations

from rs_pipeline.tasks.base import Task


def _operands(prompt: str) -> tuple[int, int]:
    left, right = prompt.rstrip("=").split("+")
    return int(left), int(right)


class AdditionTask(Task):
    """Prompt ``49+97=``, answer ``641`` (146 reversed). 100 x 100 = 10,000 distinct prompts."""

    name = "addition"
    alphabet = "0123456789+="
    answer_symbols = "0123456789"
    max_completion_chars = 3

    def prompts(self) -> list[str]:
        return [f"{a}+{b}=" for a in range(100) for b in range(100)]

    def answer(self, prompt: str) -> str:
        a, b = _operands(prompt)
        return str(a + b)[::-1]

    def bugged_answer(self, prompt: str) -> str:
        a, b = _operands(prompt)
        digits = []
        while a or b:
            digits.append(str((a % 10 + b % 10) % 10))  # the carry is dropped
            a, b = a // 10, b // 10
        no_carry = "".join(digits).rstrip("0") or "0"  # reversed digits, no leading zero
        return no_carry
