"""End-to-end tests: the real `famswap run` process (bot + workers) against the fake Discord of tests/bot."""
