"""SQS intake and acknowledgement: receivers, queue calls, the visibility heartbeat."""
