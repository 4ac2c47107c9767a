"""Loopback fakes of the providers, shared by the tests and the benchmark."""
