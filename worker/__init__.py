"""The worker: where the engine and storage meet. Job handlers (prepare, train, swap, refit), the loop that claims
and runs them, the command line's local runs of the same jobs, and the supervisor of worker processes.

Nothing below the application imports this package; it imports ``swap_engine``, ``storage`` and ``common``.
"""
