"""A fake PBS-like batch scheduler the tests ship: executables on PATH that run
jobs as real processes and forget finished ones (see README.md)."""
