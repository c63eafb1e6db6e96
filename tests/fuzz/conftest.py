# The harness is a program (atheris takes over the process), not a test module.
collect_ignore = ["fuzz_native.py"]
