"""Contract suites every implementation of a shared interface must pass."""
