"""uvicorn's server ticking once a second instead of ten times.

uvicorn's main loop wakes every 0.1 s to refresh the Date header (once a second) and look for an
exit; at rest those wake-ups are CPU for nothing, in every service and stand-in. `QuietServer` ticks
once a second, and `exit()` ends the wait at once (shutdown is no slower)."""

import asyncio
import contextlib

import uvicorn


class QuietServer(uvicorn.Server):
    def __init__(self, config: uvicorn.Config):
        super().__init__(config)
        self._exit = asyncio.Event()
        self._loop: asyncio.AbstractEventLoop | None = None

    def exit(self) -> None:
        self.should_exit = True
        self._exit.set()

    async def main_loop(self) -> None:
        self._loop = asyncio.get_running_loop()
        counter = 0  # uvicorn refreshes the Date header on ticks that are multiples of 10
        while not await self.on_tick(counter):
            counter = (counter + 10) % 864000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._exit.wait(), 1.0)

    def handle_exit(self, sig, frame) -> None:  # uvicorn's own signal handling (the stand-ins)
        super().handle_exit(sig, frame)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._exit.set)
