"""`poller redrive`: the invocation records in a stream mapping's on-failure queue, each one's
records fetched from the stream (shard, AT_SEQUENCE_NUMBER start, up to the end) and delivered
again through the mapping's engine (`ranges`); an invocation record is deleted only once its
records were delivered, or sent on failure again as a new one."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Mapping
from contextlib import aclosing
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TextIO

import anyio

from poller.aws.clients import AwsClients
from poller.aws.errors import AWS_ERRORS, describe, error_code
from poller.config.arns import DestinationArn, parse_destination_arn
from poller.config.settings import MappingSettings, Settings
from poller.engine.lifecycle import Shutdown
from poller.ops.commands.ranges import (
    EXIT_FATAL,
    CommandError,
    RangeEngine,
    Tally,
    range_engine,
    run_reporting,
    stream_mapping,
    warn_endless_retries,
)
from poller.retry import Stopped
from poller.sources.streams.shards import StartAt

if TYPE_CHECKING:
    from types_aiobotocore_sqs import SQSClient
    from types_aiobotocore_sqs.type_defs import ChangeMessageVisibilityBatchRequestEntryTypeDef

# How long the invocation records read stay invisible while the command runs; those it leaves
# are made visible again when it ends.
HOLD_SECONDS = 900
# What a stream answers for records it no longer holds.
_GONE = {"TrimmedDataAccessException", "ResourceNotFoundException", "InvalidArgumentException"}


@dataclass(frozen=True, slots=True)
class Named:
    """The records one invocation record names: a shard and a sequence range."""

    shard_id: str
    start: str
    end: str
    size: int

    def __str__(self) -> str:
        return f"{self.shard_id} {self.start}..{self.end} ({self.size} records)"

    def within(self, other: Named) -> bool:
        """Whether these records are all among `other`'s."""
        return self.shard_id == other.shard_id and (
            int(other.start) <= int(self.start) <= int(self.end) <= int(other.end)
        )


def named_by(body: str, mapping: MappingSettings, function_arn: str | None = None) -> Named | None:
    """The records an invocation record (an SQS message body) names, when it is one of this
    mapping's stream (and, given `function_arn`, was sent on failure by that function's
    mapping: its requestContext.functionArn); None otherwise."""
    try:
        record = json.loads(body)
    except ValueError:
        return None
    if not isinstance(record, Mapping):
        return None
    info = record.get("KinesisBatchInfo") or record.get("DDBStreamBatchInfo")
    if not isinstance(info, Mapping) or info.get("streamArn") != mapping.source_arn.arn:
        return None
    if function_arn is not None:
        context = record.get("requestContext")
        if not isinstance(context, Mapping) or context.get("functionArn") != function_arn:
            return None
    try:
        named = Named(
            str(info["shardId"]),
            str(info["startSequenceNumber"]),
            str(info["endSequenceNumber"]),
            int(info["batchSize"]),
        )
    except (KeyError, TypeError, ValueError):
        return None
    return named if named.start.isdigit() and named.end.isdigit() else None


def run_command(settings: Settings, args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Run `poller redrive`; its exit code, every problem on stderr."""
    # Ctrl-C: invocation records not redriven stay in the queue, made visible again on the way out.
    return run_reporting("redrive", redrive, settings, args, out)


def on_failure_queue(mapping: MappingSettings) -> DestinationArn:
    """The mapping's on-failure SQS queue; CommandError (exit 2) for none, SNS or S3."""
    config = mapping.destination_config
    if config is None or config.on_failure is None:
        raise CommandError(
            f"mapping {mapping.name} has no on-failure destination: nothing was sent on failure "
            "to redrive (destination_config.on_failure names one)"
        )
    destination = parse_destination_arn(config.on_failure.destination)
    if destination.kind != "sqs":
        what = "an SNS topic" if destination.kind == "sns" else "an S3 bucket"
        raise CommandError(
            f"mapping {mapping.name}: its on-failure destination {destination.arn} is {what}; "
            "only an SQS queue's invocation records can be read back and redriven"
        )
    return destination


async def redrive(settings: Settings, args: argparse.Namespace, out: TextIO) -> int:
    """Redrive the mapping's invocation records; 0 when every one was, 1 when some were left."""
    mapping = stream_mapping(settings, args.mapping, "redrive")
    queue = on_failure_queue(mapping)
    if not args.dry_run:
        warn_endless_retries(
            mapping, "redrive", "invocation records not redriven stay in the queue"
        )
    async with AwsClients(settings.aws) as clients:
        try:
            sqs = await clients.client("sqs", region=queue.region)
            answer = await sqs.get_queue_url(
                QueueName=queue.name, QueueOwnerAWSAccountId=queue.account
            )
            url = str(answer["QueueUrl"])
        except AWS_ERRORS as exc:
            problem = describe(exc, what=f"queue {queue.arn}", permission="sqs:GetQueueUrl")
            raise CommandError(f"mapping {mapping.name}: {problem.message}", EXIT_FATAL) from None
        async with range_engine(settings, mapping, clients, Shutdown()) as engine:
            # Another mapping reading the same stream may share the queue: its records are
            # told apart by the function that failed them. Alone on its stream, a mapping takes
            # every record of the stream, so one whose target was renamed since still redrives.
            shared = any(
                other.name != mapping.name and other.source_arn.arn == mapping.source_arn.arn
                for other in settings.mappings
            )
            function_arn = engine.function_arn if shared else None
            run = _Redrive(mapping, engine, sqs, url, args, out, function_arn)
            try:
                await run.all()
            except AWS_ERRORS as exc:
                raise CommandError(f"mapping {mapping.name}: {exc}", EXIT_FATAL) from None
            except Stopped as exc:
                raise CommandError(f"interrupted ({exc})", EXIT_FATAL) from None
            finally:
                with anyio.CancelScope(shield=True):
                    await run.release()
    return run.report()


class _Redrive:
    """One run of the command over the queue."""

    def __init__(
        self,
        mapping: MappingSettings,
        engine: RangeEngine,
        sqs: SQSClient,
        url: str,
        args: argparse.Namespace,
        out: TextIO,
        function_arn: str | None,
    ) -> None:
        self.mapping, self.engine, self.sqs, self.url, self.out = mapping, engine, sqs, url, out
        self.function_arn = function_arn
        self.limit: int | None = args.limit
        self.dry_run: bool = args.dry_run
        self.held: dict[str, str] = {}  # message id -> receipt handle, made visible at the end
        self.seen: set[str] = set()
        self.handled = self.redriven = self.left = self.others = self.later = 0
        # Only what was in the queue when the command started is redriven: a batch that fails
        # again is sent on failure as a new invocation record, at once visible in this queue,
        # and redriving that too would go on for as long as the function fails.
        self.started_ms = int(time.time() * 1000)
        # And, whatever the clocks say, a record naming records this run sent on failure again
        # (the whole range, or a part of it when bisected) is one of its own new ones.
        self.sent_again: list[Named] = []

    async def all(self) -> None:
        """Receive until the queue has nothing new (or the limit is reached)."""
        while self.limit is None or self.handled < self.limit:
            answer = await self.sqs.receive_message(
                QueueUrl=self.url,
                MaxNumberOfMessages=10,
                VisibilityTimeout=HOLD_SECONDS,
                WaitTimeSeconds=1,
                MessageSystemAttributeNames=["SentTimestamp"],
            )
            fresh = [m for m in answer.get("Messages", []) if m["MessageId"] not in self.seen]
            if not fresh:
                return
            for message in fresh:
                await self._one(message)

    async def _one(self, message: Mapping[str, Any]) -> None:
        message_id, receipt = str(message["MessageId"]), str(message["ReceiptHandle"])
        self.seen.add(message_id)
        # Held from the start: an error or Ctrl-C while its records are delivered leaves it
        # to the shielded hand-back at the end, visible again at once, not hidden for
        # HOLD_SECONDS.
        self.held[message_id] = receipt
        sent = message.get("Attributes", {}).get("SentTimestamp")
        if sent is not None and int(sent) > self.started_ms:
            self.later += 1  # sent since the command started (by this run, maybe): left
            return
        named = named_by(str(message.get("Body", "")), self.mapping, self.function_arn)
        if named is None:
            self.others += 1
            return
        if any(named.within(earlier) for earlier in self.sent_again):
            self.later += 1
            return
        if self.limit is not None and self.handled >= self.limit:
            return
        self.handled += 1
        if await self._redriven(named):
            await self.sqs.delete_message(QueueUrl=self.url, ReceiptHandle=receipt)
            del self.held[message_id]
            self.redriven += 1

    async def _redriven(self, named: Named) -> bool:
        """Deliver the records `named`; False when they are not all in the stream any more
        (or on a dry run)."""
        records = []
        end = int(named.end)
        try:
            reads = self.engine.reads(
                named.shard_id,
                StartAt("AT_SEQUENCE_NUMBER", named.start),
                before=lambda record: record.sequence <= end,
            )
            async with aclosing(reads):
                async for taken in reads:
                    records.extend(taken)
                    if records[-1][0].sequence >= end:
                        break  # all there: no need to read on to a record after it, or the tip
        except AWS_ERRORS as exc:
            if error_code(exc) not in _GONE:
                raise
            records = []
        name = f"{self.mapping.name} {named}"
        whole = bool(records) and (
            records[0][0].sequence_number,
            records[-1][0].sequence_number,
        ) == (
            named.start,
            named.end,
        )
        if not whole:
            self.left += 1
            self.out.write(
                f"{name}: no longer in the stream (past its retention); the invocation record "
                "is left in the queue\n"
            )
            return False
        if self.dry_run:
            self.out.write(f"{name}: would be redriven\n")
            return False
        counts: Tally = await self.engine.deliver(
            named.shard_id, [record for record, kept in records if kept]
        )
        if counts.sent_on_failure:
            self.sent_again.append(named)
        self.out.write(
            f"{name}: {counts.delivered} delivered, {counts.sent_on_failure} sent on failure "
            "again; the invocation record is deleted\n"
        )
        return True

    async def release(self) -> None:
        """Make every invocation record read and left visible again."""
        held = list(self.held.values())
        for at in range(0, len(held), 10):
            entries: list[ChangeMessageVisibilityBatchRequestEntryTypeDef] = [
                {"Id": str(n), "ReceiptHandle": receipt, "VisibilityTimeout": 0}
                for n, receipt in enumerate(held[at : at + 10])
            ]
            try:
                await self.sqs.change_message_visibility_batch(QueueUrl=self.url, Entries=entries)
            except AWS_ERRORS as exc:
                self.out.write(f"could not make invocation records visible again: {exc}\n")
        self.held.clear()

    def report(self) -> int:
        """The summary line; the exit code."""
        if self.dry_run:
            self.out.write(
                f"dry run: {self.handled - self.left} invocation record(s) would be redriven, "
                f"{self.left} could not be; every one left in the queue\n"
            )
            return EXIT_FATAL if self.left else 0
        others = f"; {self.others} of other mappings left as they were" if self.others else ""
        later = (
            f"; {self.later} sent since the command started left for a next run"
            if self.later
            else ""
        )
        self.out.write(
            f"redrove {self.redriven} invocation record(s) of mapping {self.mapping.name}, "
            f"{self.left} left in the queue{others}{later}\n"
        )
        tally = self.engine.tally
        # A batch sent on failure again was not redriven: its new invocation record waits.
        return EXIT_FATAL if self.left or tally.dropped or tally.sent_on_failure else 0
