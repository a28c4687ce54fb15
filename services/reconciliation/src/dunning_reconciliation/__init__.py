"""reconciliation: matches payments (Stripe webhooks, the accounting API) to invoices and publishes PaymentReceived."""
