"""`python -m dunning_notifier`: migrate the `notifier` schema, then run the API, consumer, dispatcher and relay."""

from dunning.db import migrations_of
from dunning.runtime import main as run
from dunning_notifier.bootstrap import bootstrap
from dunning_notifier.settings import Settings


def main() -> None:
    run(Settings(), migrations_of("dunning_notifier"), bootstrap)


if __name__ == "__main__":
    main()
