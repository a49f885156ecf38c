"""A background thread for the bookkeeping of an integration step, so the trainer does not wait on it.

Decoding completions, building sample rows and writing Parquet segments (with their fsyncs) take tens of
milliseconds a step; the training step needs none of it. One worker thread runs the submitted calls in
order (so the store sees them in the order the trainer made them), and the first error is raised on the
trainer's thread at its next call, so a full disk still stops the run.
"""

from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from types import TracebackType
from typing import Any


class Worker:
    """One thread running submitted calls in order; their errors re-raise on the submitting thread."""

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="entropyscope")
        self._pending: deque[Future] = deque()

    def submit(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Future:
        while self._pending and self._pending[0].done():
            self._pending.popleft().result()  # raises the worker's error here, on the trainer's thread
        future = self._pool.submit(fn, *args, **kwargs)
        self._pending.append(future)
        return future

    def drain(self) -> None:
        """Wait for every submitted call; raise the first error."""
        while self._pending:
            self._pending.popleft().result()

    def close(self) -> None:
        try:
            self.drain()
        finally:
            self._pool.shutdown(wait=True)


class BackgroundWriter:
    """A RunWriter whose calls run on `worker`, in order; as a context manager it drains them before the
    writer closes, so the run ends 'finished' only when every row is on disk."""

    def __init__(self, writer: Any, worker: Worker) -> None:
        self._writer, self._worker = writer, worker

    def __getattr__(self, name: str) -> Callable[..., None]:
        method = getattr(self._writer, name)

        def call(*args: Any, **kwargs: Any) -> None:
            self._worker.submit(method, *args, **kwargs)

        return call

    def __enter__(self) -> "BackgroundWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            self._worker.close()
        except Exception as err:  # a write failed: the run failed with it
            if exc is None:
                self._writer.__exit__(type(err), err, err.__traceback__)
                raise
        self._writer.__exit__(exc_type, exc, tb)
