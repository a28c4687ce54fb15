"""The operator CLI, `dunning`: one command for what an operator does by hand (see `main`)."""
