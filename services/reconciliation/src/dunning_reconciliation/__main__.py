"""`python -m dunning_reconciliation`: migrate the `reconciliation` schema, then run the API, consumer and relay."""

from pathlib import Path

from dunning.runtime import main as run

from dunning_reconciliation.bootstrap import bootstrap
from dunning_reconciliation.settings import Settings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def main() -> None:
    run(Settings(), MIGRATIONS, bootstrap)


if __name__ == "__main__":
    main()
