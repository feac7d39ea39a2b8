"""Tests of the Discord front end, end to end against a local fake Discord."""
