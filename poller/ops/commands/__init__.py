"""The operator's commands beside `run`: `status`, `checkpoints`, `replay` and `redrive`."""
