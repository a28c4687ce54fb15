"""An idle consumer's broker fetch wait: lengthened after a quiet spell, shortened by the next record."""

import time

from aiokafka import AIOKafkaConsumer


class IdleFetch:
    """The broker's fetch wait, lengthened after a quiet spell and shortened by the first record.

    An idle consumer otherwise asks the broker for records every `busy_ms`: at rest that polling is
    most of the stack's CPU (Tansu's and the client's). aiokafka reads the wait from its fetcher
    before each request, so setting it takes effect on the next fetch."""

    def __init__(self, consumer: AIOKafkaConsumer, busy_ms: int, idle_ms: int, after_seconds: float):
        self.consumer, self.busy_ms, self.idle_ms, self.after = consumer, busy_ms, idle_ms, after_seconds
        self.last_record = time.monotonic()
        self.dozing = False

    @property
    def quiet(self) -> bool:
        """Nothing read for `after_seconds` (naps, dunning.naps, start then)."""
        return time.monotonic() - self.last_record > self.after

    def saw(self, records: bool, *, doze: bool = True) -> None:
        """After a fetch: `records`, whether it read work; `doze=False` while the consumer naps
        instead (dunning.naps), when the broker's wait stays short."""
        if records:
            self.last_record = time.monotonic()
        if records or not doze:
            if self.dozing:
                self._set(self.busy_ms)
                self.dozing = False
        elif not self.dozing and self.idle_ms > self.busy_ms and self.quiet:
            self._set(self.idle_ms)
            self.dozing = True

    def _set(self, wait_ms: int) -> None:
        fetcher = getattr(self.consumer, "_fetcher", None)
        if fetcher is not None:
            fetcher._fetch_max_wait_ms = wait_ms
