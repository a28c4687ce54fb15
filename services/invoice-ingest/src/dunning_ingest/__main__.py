"""`python -m dunning_ingest`: migrate the `ingest` schema, then run the API, consumer and relay."""

from dunning.db import migrations_of
from dunning.runtime import main as run
from dunning_ingest.bootstrap import bootstrap
from dunning_ingest.settings import Settings


def main() -> None:
    run(Settings(), migrations_of("dunning_ingest"), bootstrap)


if __name__ == "__main__":
    main()
