"""One cog per command group: enroll, swap (with the progress poller), identities (consent), admin."""
