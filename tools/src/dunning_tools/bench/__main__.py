"""`python -m dunning_tools.bench` (`make bench`): throughput and latency figures of the whole system."""

from dunning_tools.bench.system import main

main()
