"""The chaos harness: `harness` runs the system under SIGKILLs and a paused relay, `checks` states
what must still hold afterwards. `python -m dunning_tools.chaos` is `make chaos`."""
