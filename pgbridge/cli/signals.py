"""Commands that run until they finish or are stopped: ``retention --every`` and ``tail``.

SIGINT and SIGTERM stop them cleanly (through their ``finally`` blocks, so
connections close and an embedded PostgreSQL is shut down), and the exit
status is the one a shell reports for a process those signals ended.
"""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable, Coroutine

#: Exit status after SIGINT (Ctrl-C) or SIGTERM, as a shell reports a process those signals ended.
SIGNALLED_EXIT = {signal.SIGINT: 130, signal.SIGTERM: 143}


async def until_signalled(
    work: Coroutine[object, object, int], *, on_signal: Callable[[], None] | None = None
) -> int:
    """Run *work* until it returns, or until SIGINT or SIGTERM stop it cleanly.

    The handlers are installed explicitly, so ``retention --every`` under
    systemd (SIGTERM) or started from a script that ignores SIGINT still
    leaves through its ``finally`` blocks and closes its connections.
    *on_signal*, if given, is called once *work* has stopped for a signal
    (``tail`` prints where to resume).
    """
    loop = asyncio.get_running_loop()
    task = asyncio.ensure_future(work)
    received: list[int] = []

    def stop(signum: int) -> None:
        received.append(signum)
        task.cancel()

    for signum in SIGNALLED_EXIT:
        loop.add_signal_handler(signum, stop, signum)
    try:
        return await task
    except asyncio.CancelledError:
        if not received:
            raise
        if on_signal is not None:
            on_signal()
        return SIGNALLED_EXIT[signal.Signals(received[0])]
    finally:
        for signum in SIGNALLED_EXIT:
            loop.remove_signal_handler(signum)
