"""Thread pools with a fixed number of slots: slow work (bcrypt, probes, the status page) never runs on the loop."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class Slots:
    """A pool of ``size`` threads and a count of the work it holds; ``full`` tells a handler to refuse at once."""

    def __init__(self, size: int, *, name: str) -> None:
        self.size = size
        self._busy = 0  # changed on the event loop's thread only
        self._pool = ThreadPoolExecutor(size, thread_name_prefix=name)

    @property
    def full(self) -> bool:
        """Tell whether every slot holds work (refuse more rather than queue it)."""
        return self._busy >= self.size

    async def run(self, fn: Callable[[], T]) -> T:
        """Run ``fn`` in the pool, holding a slot until it ends in its thread (not when a client gives up)."""
        self._busy += 1
        future = asyncio.get_running_loop().run_in_executor(self._pool, fn)

        def release(_: object) -> None:
            self._busy -= 1

        future.add_done_callback(release)
        return await asyncio.shield(future)  # a cancelled handler must not mark the running work as done

    def close(self) -> None:
        """Stop the threads; queued work is cancelled, running work ends on its own."""
        self._pool.shutdown(wait=False, cancel_futures=True)
