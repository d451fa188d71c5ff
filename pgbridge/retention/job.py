"""The retention job a bridge runs between ``start()`` and ``close()``.

Opt-in (``PostgresStreamBridge(dsn, retention=RetentionPolicy(...))``): every
``retention_interval`` seconds it tries one pass. When another process's
pass holds the lock it skips its turn rather than queueing behind it, so any
number of bridges can run the job and the database sees one pass at a time.
A failed pass (database down) is logged and tried again next interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from pgbridge.exceptions import StreamBridgeError
from pgbridge.retention.policy import RetentionPolicy, RetentionReport
from pgbridge.retention.sweep import RetentionPass

logger = logging.getLogger(__name__)


class RetentionJob:
    """Runs :class:`RetentionPass` periodically in a background task."""

    def __init__(self, retention_pass: RetentionPass, policy: RetentionPolicy, interval: float) -> None:
        self._pass = retention_pass
        self._policy = policy
        self._interval = interval
        self._task: asyncio.Task[None] | None = None
        #: Passes this job completed, and the turns it skipped because another pass held the lock.
        self.passes = 0
        self.skipped = 0
        self.last_report: RetentionReport | None = None

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self._run_forever(), name="pgbridge-retention")

    async def stop(self) -> None:
        """Stop the job; a pass in progress is interrupted and its open batch rolls back."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _run_forever(self) -> None:
        while True:
            await self._run_once()
            await asyncio.sleep(self._interval)

    async def _run_once(self) -> None:
        try:
            report = await self._pass.run(self._policy, wait=False)
        except StreamBridgeError as exc:
            logger.warning("pgbridge retention pass failed (retrying in %ss): %s", self._interval, exc)
            return
        if report is None:
            self.skipped += 1
            return
        self.passes += 1
        self.last_report = report  # the pass logged its own summary
