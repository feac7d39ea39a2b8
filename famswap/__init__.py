"""famswap, the application: the `famswap` command line, `famswap run`'s wiring of bot and workers, and the doctor;
it sits above every other package and nothing imports it."""

__version__ = "0.1.0"
