"""A consumer leaves its group when it stops, in a group's first generation too.

Tansu numbers a group's first generation 0 (Kafka starts at 1), and aiokafka sends its LeaveGroup on
stop only from a generation above 0: a member of a Tansu group's first generation never left, and the
next member to join the group (a restarted replica, the next test's runner) waited for the old one's
session to run out and the rebalance after it, some 8 s. `leave_on_stop` makes the consumer's
coordinator leave from generation 0 as well; against Kafka it changes nothing."""

from typing import Any

import aiokafka.errors as errors
from aiokafka import AIOKafkaConsumer
from aiokafka.protocol.group import LeaveGroupRequest

from dunning.logging import get_logger

log = get_logger(__name__)


def leave_on_stop(consumer: AIOKafkaConsumer) -> None:
    """Call once the consumer has started (its group coordinator exists); a consumer without a group
    (or an aiokafka whose coordinator differs) is left as it is."""
    coordinator: Any = getattr(consumer, "_coordinator", None)
    original = getattr(coordinator, "_maybe_leave_group", None)
    if coordinator is None or original is None or not hasattr(coordinator, "generation"):
        return

    async def maybe_leave_group() -> None:
        if coordinator.generation != 0 or coordinator._group_instance_id is not None or not coordinator.member_id:
            await original()
            return
        try:  # a minimal effort, as aiokafka's own: no retry
            await coordinator._send_req(LeaveGroupRequest(coordinator.group_id, coordinator.member_id))
        except errors.KafkaError as err:
            log.warning("consumer.leave_group_failed", group=coordinator.group_id, error=str(err))
        coordinator.reset_generation()

    coordinator._maybe_leave_group = maybe_leave_group
