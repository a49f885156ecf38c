import json
import re

import numpy as np
import pytest

from analysis.errors import UsageError
from trainer.tasks import Prompt, make_task
from trainer.tasks.bandit import ARMS, BEST_ARM, REWARDS


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


@pytest.fixture
def qa_file(tmp_path):
    path = tmp_path / "qa.jsonl"
    rows = [
        {"prompt": "2*3=", "answer": "6"},
        {"prompt": "capital of France?", "answer": "Paris", "verifier": "exact"},
        {"prompt": "an even digit:", "answer": "[02468]", "verifier": "regex", "example": "4"},
        {"prompt": "say 42:", "answer": "42", "verifier": "regex"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n")
    return path


@pytest.fixture(params=["digit_sum", "bandit", "jsonl"])
def task(request, qa_file):
    return make_task(f"jsonl:{qa_file}" if request.param == "jsonl" else request.param, seed=0)


def test_sample_is_deterministic_for_a_seed(task):
    assert task.sample(_rng(5), 50) == task.sample(_rng(5), 50)
    assert task.sample(_rng(5), 50) != task.sample(_rng(6), 50)
    assert all(isinstance(p, Prompt) for p in task.sample(_rng(), 10))


def test_demonstrations_are_right_or_wrong_as_asked(task):
    rng = _rng(1)
    for prompt in task.sample(rng, 200):
        assert task.reward(prompt, task.demonstration(prompt, rng, True))[1]
        assert not task.reward(prompt, task.demonstration(prompt, rng, False))[1]


def test_digit_sum_prompts_and_rewards():
    task = make_task("digit_sum")
    prompts = task.sample(_rng(), 300)
    for p in prompts:
        assert re.fullmatch(r"\d(\+\d){1,2}=", p.text)
        assert p.answer == str(sum(int(d) for d in p.text[:-1].split("+")))
    assert {p.text.count("+") for p in prompts} == {1, 2}
    p = Prompt("3+5+2=", "10")
    assert task.reward(p, "10") == (1.0, True)
    assert task.reward(p, " 10\n") == (1.0, True)
    for wrong in ("11", "1 0", "", "10x", "010"):
        assert task.reward(p, wrong) == (0.0, False)


def test_digit_sum_wrong_demonstrations_are_near_misses():
    task, rng = make_task("digit_sum"), _rng(2)
    p = Prompt("0+1=", "1")
    wrong = {task.demonstration(p, rng, False) for _ in range(200)}
    assert wrong == {"0", "2", "3", "4"}  # off by 1-3, never negative


def test_bandit_rewards_follow_the_fixed_table():
    task = make_task("bandit")
    p = task.sample(_rng(), 1)[0]
    assert sorted(REWARDS.values()) == pytest.approx(np.linspace(0, 1, len(ARMS)))
    assert task.reward(p, BEST_ARM) == (1.0, True)
    assert task.reward(p, f"  {BEST_ARM}\n") == (1.0, True)
    for arm in ARMS.replace(BEST_ARM, ""):
        reward, correct = task.reward(p, arm)
        assert reward == REWARDS[arm] < 1.0 and not correct
    assert task.reward(p, "z") == (0.0, False)
    assert task.reward(p, BEST_ARM * 2) == (0.0, False)
    assert len({q.text for q in task.sample(_rng(), 100)}) > 1  # a few prompt variants


def test_bandit_wrong_demonstrations_cover_the_other_arms_evenly():
    task, rng = make_task("bandit"), _rng(3)
    p = task.sample(rng, 1)[0]
    picks = [task.demonstration(p, rng, False) for _ in range(7000)]
    counts = {arm: picks.count(arm) for arm in set(picks)}
    assert set(counts) == set(ARMS) - {BEST_ARM}
    assert all(800 < c < 1200 for c in counts.values())


def test_jsonl_exact_and_regex_verifiers(qa_file):
    task = make_task(f"jsonl:{qa_file}")
    by_text = {p.text: p for p in task.prompts}
    assert len(task.prompts) == 4  # blank lines skipped
    assert task.reward(by_text["capital of France?"], " Paris\n") == (1.0, True)
    assert task.reward(by_text["capital of France?"], "paris") == (0.0, False)
    even = by_text["an even digit:"]
    assert task.reward(even, " 8 ") == (1.0, True)
    assert task.reward(even, "7") == (0.0, False)
    assert task.reward(even, "88") == (0.0, False)  # fullmatch, not search
    assert {p.text for p in task.sample(_rng(), 200)} == set(by_text)  # with replacement, all lines reached


def test_jsonl_regex_without_example_needs_one_for_warmup(tmp_path):
    path = tmp_path / "r.jsonl"
    path.write_text(json.dumps({"prompt": "p", "answer": "a+b?", "verifier": "regex"}) + "\n")
    task = make_task(f"jsonl:{path}")
    with pytest.raises(UsageError, match="needs an 'example' field"):
        task.demonstration(task.prompts[0], _rng(), True)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        ('{"prompt": "a", "answer": "b"}\n{"prompt": "a", "answer": \n', "line 2: invalid JSON"),
        (
            '{"prompt": "a", "answer": "b"}\n\n{"prompt": "a"}\n',
            "line 3: missing or non-string field 'answer'",
        ),
        ('{"prompt": "a", "answer": 7}\n', "line 1: missing or non-string field 'answer'"),
        ('["a", "b"]\n', "line 1: expected a JSON object"),
        ('{"prompt": "a", "answer": "(", "verifier": "regex"}\n', "line 1: answer is not a valid regex"),
        ('{"prompt": "a", "answer": "b", "verifier": "fuzzy"}\n', "line 1: verifier 'fuzzy' is not one of"),
        ('{"prompt": "a", "answer": "\\\\d", "verifier": "regex", "example": "x"}\n', "line 1: example 'x'"),
        ("\n\n", "has no lines"),
    ],
)
def test_jsonl_errors_name_file_and_line(tmp_path, content, fragment):
    path = tmp_path / "bad.jsonl"
    path.write_text(content)
    with pytest.raises(UsageError) as info:
        make_task(f"jsonl:{path}")
    message = str(info.value)
    assert fragment in message and str(path) in message and "\n" not in message


def test_jsonl_missing_file(tmp_path):
    with pytest.raises(UsageError, match="does not exist"):
        make_task(f"jsonl:{tmp_path / 'nope.jsonl'}")


@pytest.mark.parametrize("spec", ["digits", "jsonl:", "", "Bandit"])
def test_unknown_task_lists_valid_specs(spec):
    with pytest.raises(UsageError) as info:
        make_task(spec)
    assert "digit_sum, bandit, jsonl:PATH" in str(info.value)
