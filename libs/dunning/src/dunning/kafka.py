"""Kafka clients and topic creation from the catalogue in schemas/topics/.

Producers run without idempotence or transactions (Tansu has neither): delivery is at-least-once,
and every consumer is idempotent through its inbox.
"""

import asyncio

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError

from dunning.events import topic_catalogue


def make_producer(bootstrap_servers: str, client_id: str) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap_servers,
        client_id=client_id,
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
        max_batch_size=256 * 1024,
        request_timeout_ms=15000,
    )


def _topic_config(entry: dict) -> dict[str, str]:
    retention = entry.get("retention") or {}
    config = {}
    if "ms" in retention:
        config["retention.ms"] = str(retention["ms"])
    if "cleanup_policy" in retention:
        config["cleanup.policy"] = str(retention["cleanup_policy"])
    return config


async def ensure_topics(bootstrap_servers: str, *, attempts: int = 30, replication_factor: int = 1) -> list[str]:
    """Create every catalogued topic that does not exist yet; returns the names created."""
    wanted = topic_catalogue()
    for attempt in range(attempts):
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, client_id="dunning-admin")
        try:
            await admin.start()
            existing = set(await admin.list_topics())
            missing = [
                NewTopic(
                    name,
                    num_partitions=int(entry.get("partitions", 6)),
                    replication_factor=replication_factor,
                    topic_configs=_topic_config(entry),
                )
                for name, entry in wanted.items()
                if name not in existing
            ]
            for topic in missing:
                try:
                    await admin.create_topics([topic])
                except TopicAlreadyExistsError:
                    pass
            return [t.name for t in missing]
        except Exception:
            if attempt == attempts - 1:
                raise
            await asyncio.sleep(0.5)
        finally:
            await admin.close()
    return []
