"""Webhook delivery for `watch`: JSON POSTs in order, retried with backoff while the endpoint is down, and the
outage reported in one line when it starts and one when it ends (or at close), not one per POST.

A failed POST stays queued (the newest MAX_QUEUED) and the queue is retried at the first `deliver` after its
backoff (RETRY_FIRST_S doubling to RETRY_MAX_S) has passed; `watch` delivers once per cycle, so a dead
endpoint costs a cycle at most one request (TIMEOUT_S). `close` retries for at most CLOSE_S more. Nothing is
lost for good when a POST is dropped: every transition is recorded in its run's events first.
"""

import json
import time
import urllib.request
from collections import deque
from collections.abc import Callable
from typing import Any

TIMEOUT_S = 5.0
RETRY_FIRST_S = 1.0
RETRY_MAX_S = 300.0
MAX_QUEUED = 1000
CLOSE_S = 3.0


def post_webhook(url: str, body: dict[str, Any], timeout_s: float = TIMEOUT_S) -> None:
    """POST `body` as JSON; raises OSError (URLError, HTTPError, timeout) or ValueError (bad URL)."""
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    with urllib.request.urlopen(request, timeout=timeout_s) as response:
        response.read()


class Webhook:
    """The POST queue of one URL; `out` gets the outage lines."""

    def __init__(
        self, url: str, out: Callable[[str], Any], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.url = url
        self._out = out
        self._clock = clock
        self._queue: deque[dict[str, Any]] = deque()
        self._backoff = 0.0
        self._retry_at = -float("inf")
        self.delivered = self.dropped = self.failures = 0
        self._late = 0  # delivered after waiting out an outage
        self._error: Exception | None = None

    def send(self, body: dict[str, Any]) -> None:
        """Queue `body` and deliver what is due."""
        self._queue.append(body)
        while len(self._queue) > MAX_QUEUED:
            self._queue.popleft()
            self.dropped += 1
        self.deliver()

    def deliver(self) -> bool:
        """POST the queue in order unless its backoff is still running; True when it is empty."""
        if self._queue and self._clock() >= self._retry_at:
            while self._queue:
                try:
                    post_webhook(self.url, self._queue[0])
                except (OSError, ValueError) as err:
                    self._failed(err)
                    return False
                self._queue.popleft()
                self.delivered += 1
                self._late += self._error is not None
            if self._error is not None:
                self._out(
                    f"webhook {self.url} answers again: {self._late} queued POSTs delivered late{self._lost()}"
                )
                self._reset()
        return not self._queue

    def close(self, sleep: Callable[[float], None] = time.sleep) -> None:
        """Retry what is queued for at most CLOSE_S seconds (at once, then on the backoff); report what is left."""
        deadline = self._clock() + CLOSE_S
        self._retry_at = -float("inf")
        while not self.deliver() and self._retry_at < deadline:
            sleep(max(0.0, self._retry_at - self._clock()))
        if self._queue or self.dropped:
            self.dropped += len(self._queue)
            self._queue.clear()
            self._out(f"webhook {self.url}: {self.delivered} POSTs delivered{self._lost()}")
            self._reset()

    def _failed(self, err: Exception) -> None:
        self.failures += 1
        self._backoff = min(max(2 * self._backoff, RETRY_FIRST_S), RETRY_MAX_S)
        self._retry_at = self._clock() + self._backoff
        if self._error is None:
            self._out(
                f"webhook POST to {self.url} failed ({err}); retrying with backoff, {len(self._queue)} queued "
                "(every transition is recorded in its run's events)"
            )
        self._error = err

    def _lost(self) -> str:
        if not self.dropped:
            return ""
        why = f" after {self.failures} failed tries, the last: {self._error}" if self._error else ""
        return f", {self.dropped} dropped{why} (they are in the runs' events)"

    def _reset(self) -> None:
        self._error, self._backoff, self._late, self.failures, self.dropped = None, 0.0, 0, 0, 0
