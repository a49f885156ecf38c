"""The integrations' bookkeeping thread: calls run in order, and a failed write stops the trainer and fails the
run instead of vanishing in the thread."""

import errno

import pytest

from trainer.integrations.background import BackgroundWriter, Worker


class Recorder:
    """A stand-in RunWriter: records calls; `log_scalars` of step 3 fails as a full disk does."""

    def __init__(self) -> None:
        self.calls: list[tuple] = []

    def log_scalars(self, step: int, metrics: dict) -> None:
        if step == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        self.calls.append(("log_scalars", step))

    def heartbeat(self, step: int) -> None:
        self.calls.append(("heartbeat", step))

    def __exit__(self, exc_type, exc, tb) -> None:
        self.calls.append(("exit", exc_type))


def test_calls_run_in_order_and_close_finishes() -> None:
    rec = Recorder()
    with BackgroundWriter(rec, Worker()) as w:
        for step in (1, 2):
            w.log_scalars(step, {})
            w.heartbeat(step)
    assert rec.calls == [
        ("log_scalars", 1),
        ("heartbeat", 1),
        ("log_scalars", 2),
        ("heartbeat", 2),
        ("exit", None),
    ]


def test_a_failed_write_raises_on_the_trainers_thread_and_fails_the_run() -> None:
    rec = Recorder()
    with pytest.raises(OSError, match="No space left"), BackgroundWriter(rec, Worker()) as w:
        w.log_scalars(3, {})
        for step in range(4, 1000):  # the error surfaces at a later call, not never
            w.heartbeat(step)
    assert rec.calls[-1] == ("exit", OSError)
