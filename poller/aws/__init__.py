"""AWS clients and error classification."""
