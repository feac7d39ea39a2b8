"""famswap: shared configuration, errors and logging, and the `famswap` command line."""

__version__ = "0.1.0"
