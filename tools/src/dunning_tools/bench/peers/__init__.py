"""The job queues side by side with the platform on the reminder workload (issue 13, item 5).

bench.py, common.py and peer_procrastinate.py / peer_pgqueuer.py are the shared peers harness,
vendored; peer_dunning.py is the platform as the third contender; __main__.py runs the three on the
embedded PostgreSQL (fsync on) and saves the figures. docs/bench-peers.md says what the platform does.
"""
