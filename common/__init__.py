"""The shared leaf: configuration, the error tree and logging set-up; imports nothing of famswap's own packages."""
