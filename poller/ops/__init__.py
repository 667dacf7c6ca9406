"""What operators see: the HTTP endpoints, status, metrics and logs."""
