"""Fakes for the unit and batch tests: stand-ins for the broker client where no broker is wanted."""


class FakeConsumer:
    """The part of an AIOKafkaConsumer that ConsumerRunner.process_batch uses; keeps what was committed."""

    def __init__(self):
        self.commits: list[dict] = []

    async def commit(self, offsets):
        self.commits.append(offsets)
