"""Tests of the worker package: real stages on tiny media, real worker processes, cancel, fairness, cleanup."""
