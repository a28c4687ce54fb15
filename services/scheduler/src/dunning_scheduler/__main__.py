"""`python -m dunning_scheduler`: the scheduler process (HTTP API, consumer, firing loop, outbox relay)."""

from pathlib import Path

from dunning.runtime import main as run

from dunning_scheduler.bootstrap import bootstrap
from dunning_scheduler.settings import Settings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def main() -> None:
    run(Settings(), MIGRATIONS, bootstrap)


if __name__ == "__main__":
    main()
