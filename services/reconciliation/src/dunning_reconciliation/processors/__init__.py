"""Payments from processors other than Stripe (issue 11): GoCardless and any processor that follows
Standard Webhooks. Each processor module verifies a delivery exactly as its processor signs it and
reads its events into `events.ProcessorEvent` (pure, no I/O); `inbound` records every event id and
applies each event through the money core in one transaction. docs/processors.md tells the contract
a merchant follows (GoCardless metadata, our Standard Webhooks event vocabulary)."""
