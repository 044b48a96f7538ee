"""A websockets server on its own asyncio loop in its own thread: what ``serve`` and the ``ws://``
sink share.

The frame clock must never wait on the network, so each server's loop runs in a daemon thread; the
clock hands work over with :meth:`LoopThread.call_soon` (never blocks, harmless after shutdown).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any

log = logging.getLogger(__name__)


class LoopThread:
    def __init__(self, name: str) -> None:
        self.name = name
        self.loop = asyncio.new_event_loop()
        self.server: Any = None
        self.thread: threading.Thread | None = None
        self._stopping = False

    def start(self, open_server: Callable[[], Awaitable[Any]], timeout: float = 10.0) -> None:
        """Run ``open_server()`` (e.g. ``websockets.serve(...)``) on the loop and keep the loop
        running; returns once the server listens. Raises OSError with the reason (port in use,
        bad host) when it cannot."""
        ready = threading.Event()
        errors: list[str] = []
        self.thread = threading.Thread(target=self._run, args=(open_server, ready, errors),
                                       name=self.name, daemon=True)
        self.thread.start()
        ready.wait(timeout)
        if errors or self.server is None:
            self.thread.join(2)
            raise OSError(errors[0] if errors else "server did not start")

    def _run(self, open_server: Callable[[], Awaitable[Any]], ready: threading.Event, errors: list[str]) -> None:
        async def opened() -> Any:  # called inside the running loop, as websockets.serve requires
            return await open_server()

        asyncio.set_event_loop(self.loop)
        try:
            self.server = self.loop.run_until_complete(opened())
        except Exception as e:  # port in use, bad host name (which surfaces as various errors)
            errors.append(getattr(e, "strerror", None) or str(e))
        ready.set()
        if self.server is None:
            self.loop.close()
            return
        try:
            self.loop.run_forever()
        finally:
            self.loop.run_until_complete(self.loop.shutdown_asyncgens())
            self.loop.close()

    @property
    def port(self) -> int:
        return self.server.sockets[0].getsockname()[1]

    @property
    def alive(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def call_soon(self, fn: Callable[..., Any], *args: Any) -> None:
        """Run ``fn(*args)`` on the loop, from any thread; a no-op once the loop has closed."""
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed during shutdown
            pass

    def stop(self, timeout: float = 5.0) -> None:
        """Close the server, then the loop, and join the thread (from any other thread; once)."""
        if self._stopping or self.server is None or not self.alive:
            return
        self._stopping = True

        async def stop() -> None:
            self.server.close()
            await self.server.wait_closed()
            self.loop.stop()

        try:
            asyncio.run_coroutine_threadsafe(stop(), self.loop)
        except RuntimeError:
            return
        if self.thread is not threading.current_thread():
            self.thread.join(timeout)
