"""Kinesis and DynamoDB Streams intake and acknowledgement: discovery, lineage, shard
readers, watermarks and checkpoints."""
