"""The operator's commands beside `run`: `poller status` and `poller checkpoints`."""
