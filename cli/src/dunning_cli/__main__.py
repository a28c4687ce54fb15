import sys

from dunning_cli.main import main

sys.exit(main())
