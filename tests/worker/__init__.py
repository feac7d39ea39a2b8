"""Tests of swap_engine.worker: real stages on tiny media, real worker processes, cancel, fairness, cleanup."""
