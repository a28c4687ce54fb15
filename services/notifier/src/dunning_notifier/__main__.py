"""`python -m dunning_notifier`: migrate the notifier schema, then run API, consumer, dispatcher, relay."""

from pathlib import Path

from dunning import runtime
from dunning_notifier.bootstrap import bootstrap
from dunning_notifier.settings import Settings

MIGRATIONS = Path(__file__).resolve().parents[2] / "migrations"


def main() -> None:
    runtime.main(Settings(), MIGRATIONS, bootstrap)


if __name__ == "__main__":
    main()
