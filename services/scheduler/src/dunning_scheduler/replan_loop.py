"""The replan loop: applies a policy version to a tenant's open invoices planned with that policy
(PUT /v1/policy or /v1/policies/{policy_id} with apply_to=open_invoices), batch by batch, each
batch its own transaction.

A step claims the oldest running job (`FOR UPDATE SKIP LOCKED`, so replicas work different jobs and
one job's batches never overlap), locks its next `batch_size` open invoices in invoice id order
after the job's cursor, re-plans them with the job's version (replanner, reason policy_applied),
and moves the cursor and the counts in the same transaction: a crash repeats at most the batch in
flight, which re-plans to the same result. A job whose last batch is short is done. A NOTIFY on
`scheduler_replans_<schema>` (sent when a job is created) wakes the loop; otherwise it polls.
"""

import asyncpg

from dunning.logging import get_logger
from dunning.loops import Loop
from dunning_scheduler import repository
from dunning_scheduler.policy_store import ActivePolicies
from dunning_scheduler.replanner import replan_invoices
from dunning_scheduler.replanning import POLICY_APPLIED

log = get_logger(__name__)
REPLANS_CHANNEL = "scheduler_replans"


class ReplanLoop(Loop):
    name = "replans"
    error_event = "scheduler.replans.error"

    def __init__(
        self,
        pool: asyncpg.Pool,
        schema: str,
        policies: ActivePolicies,
        *,
        batch_size: int = 500,
        poll_seconds: float = 5.0,
    ):
        super().__init__(idle_seconds=poll_seconds, listen=(pool, f"{REPLANS_CHANNEL}_{schema}"))
        self.pool = pool
        self.policies = policies
        self.batch_size = batch_size
        self.batches = 0

    async def step(self) -> float | None:
        return 0 if await self.work_once() else None

    async def work_once(self) -> bool:
        """Re-plan one batch of the oldest running job; False: no job to work on."""
        async with self.pool.acquire() as conn, conn.transaction():
            job = await repository.claim_replan(conn)
            if job is None:
                return False
            tenant_id, version, key = job["tenant_id"], job["policy_version"], job["policy_key"]
            invoices = await repository.open_invoices_after(
                conn, tenant_id, job["after_invoice_id"], self.batch_size, policy_key=key
            )
            policy = await self.policies.version_of(conn, tenant_id, version, is_default=False, policy_key=key)
            rescheduled = await replan_invoices(
                conn,
                invoices,
                reason=POLICY_APPLIED,
                cause_event_id=None,
                changed_at=job["created_at"],
                policies=self.policies,
                policy=policy,
            )
            finished = len(invoices) < self.batch_size
            await repository.advance_replan(
                conn,
                job["replan_id"],
                after_invoice_id=invoices[-1]["invoice_id"] if invoices else job["after_invoice_id"],
                done=len(invoices),
                rescheduled=rescheduled,
                finished=finished,
            )
        self.batches += 1
        log.info(
            "scheduler.replans.batch",
            replan_id=job["replan_id"],
            tenant_id=tenant_id,
            invoices=len(invoices),
            rescheduled=rescheduled,
            finished=finished,
        )
        return True
