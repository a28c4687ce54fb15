"""Settings shared by every service; each service subclasses with its own env prefix.

`DATABASE_URL` and `KAFKA_BOOTSTRAP_SERVERS` are read without a prefix (one server for the whole
stack); everything service-specific carries the service's prefix, e.g. `SCHEDULER_HTTP_PORT`.
Settings are read once, at start-up, by the service's bootstrap.
"""

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    service_name: str = "dunning"
    database_url: str = Field(
        "postgresql://postgres@127.0.0.1:5432/dunning",
        validation_alias=AliasChoices("DATABASE_URL"),
    )
    kafka_bootstrap_servers: str = Field("127.0.0.1:9092", validation_alias=AliasChoices("KAFKA_BOOTSTRAP_SERVERS"))
    # At start-up, create the catalogued topics that do not exist (schemas/topics/*.yaml: partitions,
    # retention). Off where topics are managed elsewhere (e.g. a Strimzi KafkaTopic).
    kafka_create_topics: bool = Field(True, validation_alias=AliasChoices("KAFKA_CREATE_TOPICS"))
    kafka_replication_factor: int = Field(1, validation_alias=AliasChoices("KAFKA_REPLICATION_FACTOR"))
    # The PostgreSQL schema that holds this service's tables (one schema per service).
    db_schema: str = "public"
    db_pool_min: int = 2
    db_pool_max: int = 10

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    # Several replicas of a service on one host may share its port (SO_REUSEPORT: the kernel
    # spreads connections), as pods behind a Service do.
    http_reuse_port: bool = False
    # Larger request bodies are refused with a 413 at the edge (ingest raises it for bulk imports).
    http_max_body_bytes: int = 1024 * 1024
    # API key -> tenant lookups are cached this long (a revoked key works until then); 0 disables.
    auth_cache_seconds: float = 5.0

    log_level: str = Field("INFO", validation_alias=AliasChoices("LOG_LEVEL"))
    # "none", "console" (spans as JSON on stdout) or "otlp" (OTLP/HTTP to OTEL_EXPORTER_OTLP_ENDPOINT, see
    # dunning.tracing); anything else is refused at start.
    otel_traces_exporter: str = Field("none", validation_alias=AliasChoices("OTEL_TRACES_EXPORTER"))

    # Consumer runner.
    consumer_batch_max: int = 500
    consumer_fetch_wait_ms: int = 50
    # After this long with nothing to read, the broker is asked to hold each fetch this long instead
    # (fewer empty fetches at rest; the first record after a quiet spell may wait for it). 0 disables.
    consumer_idle_after_seconds: float = 2.0
    consumer_idle_fetch_wait_ms: int = 500
    # After the quiet spell, with hints (dunning.naps: every publisher NOTIFYs "records:<topic>" after
    # the broker acknowledged), the consumer pauses until one comes, or this long at most; 0: no naps.
    consumer_idle_nap_seconds: float = 10.0
    consumer_max_infra_retries: int = 8
    # A replica that dies unannounced (SIGKILL, a lost node) leaves its group after this long; until the
    # group forms again its members' consumption waits. 6 s is Kafka's floor (the broker's
    # group.min.session.timeout.ms); the local stack's Tansu takes 3 s, where a kill stalled a group
    # 2 s instead of 11 (docs/cancel-guarantee.md#a-replica-killed). Heartbeats every third of it.
    consumer_session_timeout_ms: int = 6000
    consumer_handler_attempts: int = 3

    # Outbox relay.
    relay_enabled: bool = True
    relay_batch_size: int = 2000
    relay_poll_seconds: float = 2.0  # the look-again when no NOTIFY came (every outbox write sends one)

    # Housekeeping (dunning.loops.Housekeeping): every service purges its inbox ids older than the
    # topics' retention (they can no longer be redelivered), plus its own chores.
    housekeeping_interval_seconds: float = 600.0
    inbox_retention_days: int = 14
