"""Fakes at the boundaries poller owns: a queue, a scripted target. Shared by unit tests."""
