"""`python -m dunning_tools.chaos` (`make chaos`): the promises checked under SIGKILLs and a paused relay."""

import sys

from dunning_tools.chaos.harness import main

sys.exit(main())
