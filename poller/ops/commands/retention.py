"""How far back a stream keeps records: a time a command is given (`replay --from`,
`checkpoints set --timestamp`) older than that is refused, not silently moved to the oldest
record kept."""

from __future__ import annotations

from poller.aws.clients import AwsClients
from poller.config.settings import MappingSettings
from poller.events.invocation import iso_timestamp
from poller.ops.commands.ranges import CommandError

# DynamoDB Streams keeps a record for 24 hours, whatever the table.
DYNAMODB_RETENTION_HOURS = 24


async def check_retention(
    mapping: MappingSettings, clients: AwsClients, since: float, now: float, option: str
) -> None:
    """CommandError (exit 2) when `since`, given as `option`, is older than what the mapping's
    stream keeps."""
    source = mapping.source_arn
    if source.kind == "kinesis":
        kinesis = await clients.client("kinesis", region=source.region)
        summary = await kinesis.describe_stream_summary(StreamARN=source.arn)
        hours = int(summary["StreamDescriptionSummary"]["RetentionPeriodHours"])
    else:
        hours = DYNAMODB_RETENTION_HOURS
    horizon = now - hours * 3600
    if since < horizon:
        raise CommandError(
            f"mapping {mapping.name}: {option} {iso_timestamp(since)} is older than what stream "
            f"{source.arn} keeps ({hours} hours, so nothing before {iso_timestamp(horizon)}); "
            f"pass a later {option}"
        )
