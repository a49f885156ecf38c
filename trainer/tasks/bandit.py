"""bandit: a one-token multi-armed bandit. The prompt asks for an arm; the response is one letter a..h.

Each arm pays a fixed reward (linearly spaced in [0, 1], one best arm); only the best arm counts as
correct. With no prompt information to use, it isolates the entropy dynamics of policy gradient on a
single categorical distribution.
"""

import numpy as np

from trainer.tasks import Prompt

ARMS = "abcdefgh"
# A fixed shuffle of linspace(0, 1, 8): the best arm is 'c', so alphabetical order is no shortcut.
REWARDS = dict(zip(ARMS, (3 / 7, 5 / 7, 1.0, 0.0, 6 / 7, 2 / 7, 1 / 7, 4 / 7), strict=True))
BEST_ARM = max(REWARDS, key=REWARDS.__getitem__)
PROMPTS = ("pick:", "arm:", "choose:", "play:")


class BanditTask:
    name = "bandit"

    def sample(self, rng: np.random.Generator, n: int) -> list[Prompt]:
        return [Prompt(PROMPTS[int(i)], BEST_ARM) for i in rng.integers(0, len(PROMPTS), size=n)]

    def reward(self, prompt: Prompt, response: str) -> tuple[float, bool]:
        arm = response.strip()
        return REWARDS.get(arm, 0.0), arm == BEST_ARM

    def demonstration(self, prompt: Prompt, rng: np.random.Generator, correct: bool) -> str:
        if correct:
            return BEST_ARM
        others = [a for a in ARMS if a != BEST_ARM]
        return others[int(rng.integers(len(others)))]
