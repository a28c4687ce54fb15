# Shared fixtures (real PostgreSQL, real broker, real SMTP server) for every test in the repo.
pytest_plugins = ["dunning_tools.testing.fixtures"]
