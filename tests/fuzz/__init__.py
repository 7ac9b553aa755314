"""Fuzzing: the atheris harness smoke test and schemathesis against a real tracker."""
