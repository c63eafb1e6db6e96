"""The torture harness (issue 9): kill -9 rounds against an expected-state file,
decoder fuzzing, fault injection, concurrency stress and two-process runs.

The default test run runs each part in a bounded form; ``python -m tests.torture``
runs them long and prints the figures (see ``docs/reliability.md``).
"""
