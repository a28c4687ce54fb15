"""`python -m dunning_scheduler`: migrate the `scheduler` schema, then run the API, consumer, firing loop and relay."""

from dunning.db import migrations_of
from dunning.runtime import main as run
from dunning_scheduler.bootstrap import bootstrap
from dunning_scheduler.settings import Settings


def main() -> None:
    run(Settings(), migrations_of("dunning_scheduler"), bootstrap)


if __name__ == "__main__":
    main()
