"""Event sources: SQS queues, Kinesis streams, DynamoDB Streams."""
