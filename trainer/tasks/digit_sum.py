"""digit_sum: "3+5+2=" -> "10". Two or three single digits, so answers are one or two tokens long.

Small enough for a 2-layer model to learn partly in a few hundred supervised steps, hard enough that
RL still has something to improve.
"""

import numpy as np

from trainer.tasks import Prompt


class DigitSumTask:
    name = "digit_sum"

    def sample(self, rng: np.random.Generator, n: int) -> list[Prompt]:
        out = []
        for _ in range(n):
            digits = rng.integers(0, 10, size=int(rng.integers(2, 4)))
            out.append(Prompt("+".join(str(d) for d in digits) + "=", str(int(digits.sum()))))
        return out

    def reward(self, prompt: Prompt, response: str) -> tuple[float, bool]:
        correct = response.strip() == prompt.answer
        return float(correct), correct

    def demonstration(self, prompt: Prompt, rng: np.random.Generator, correct: bool) -> str:
        if correct:
            return prompt.answer
        # A near miss (off by 1-3, never negative), the kind of slip a partly trained model makes.
        right = int(prompt.answer)
        wrong = [v for v in range(right - 3, right + 4) if v >= 0 and v != right]
        return str(wrong[int(rng.integers(len(wrong)))])
