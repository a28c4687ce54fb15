"""`python -m dunning_ingest`: migrate the `ingest` schema, then run the API, consumer and relay."""

from pathlib import Path

from dunning.runtime import main as run

from dunning_ingest.bootstrap import bootstrap
from dunning_ingest.settings import Settings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def main() -> None:
    run(Settings(), MIGRATIONS, bootstrap)


if __name__ == "__main__":
    main()
