"""`python -m dunning_reconciliation`: migrate the `reconciliation` schema, then run the API, consumer and relay."""

from dunning.db import migrations_of
from dunning.runtime import main as run
from dunning_reconciliation.bootstrap import bootstrap
from dunning_reconciliation.settings import Settings


def main() -> None:
    run(Settings(), migrations_of("dunning_reconciliation"), bootstrap)


if __name__ == "__main__":
    main()
