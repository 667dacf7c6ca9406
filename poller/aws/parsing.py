"""How the stream clients (Kinesis, DynamoDB Streams) parse GetRecords: cheaply, and off the loop.

botocore parses a response in one synchronous call. By default it turns every timestamp into a
datetime through dateutil and base64-decodes every blob; poller only ever wants the epoch
seconds and re-encodes the blobs to base64 for the event. A 10,000-record GetRecords answer
(10 MB) took 363 ms to parse that way, 101 ms with `timestamp_parser` giving epoch seconds and
`blob_parser` keeping the base64 text, the parser settings botocore's ResponseParserFactory
offers. That is still two loop stalls' worth, so a body past OFFLOAD_BYTES is parsed in a
worker thread (the interpreter hands the GIL back to the loop every few milliseconds); a small
answer is parsed in place, where the hop to a thread would cost more than it saves.
"""

from __future__ import annotations

from typing import Any, Final

import anyio.to_thread
from aiobotocore.parsers import AioJSONParser, AioResponseParserFactory
from botocore.utils import parse_timestamp

# About 1,000 Kinesis records of 700 B: around 10 ms of parsing with the settings below.
OFFLOAD_BYTES: Final = 1_000_000


def epoch_seconds(value: Any) -> float:
    """A timestamp as epoch seconds: the JSON protocols send numbers; text (ISO 8601), which
    these services do not send today, goes through botocore's own parser."""
    if isinstance(value, int | float):
        return float(value)
    return float(parse_timestamp(value).timestamp())


def keep_base64(value: str) -> str:
    """A blob as the base64 text the wire carried: the event wants exactly that."""
    return value


_SETTINGS: Final = {"timestamp_parser": epoch_seconds, "blob_parser": keep_base64}


class _OffloadingJSONParser(AioJSONParser):
    """botocore's JSON parser, run in a worker thread for a big body."""

    async def _do_parse(self, response: dict[str, Any], shape: Any) -> Any:
        # botocore's parser methods are untyped internals: reached through Any.
        base: Any = super()
        this: Any = self
        body = response["body"]
        if shape is None or shape.event_stream_name or len(body) < OFFLOAD_BYTES:
            return await base._do_parse(response, shape)
        parsed = await anyio.to_thread.run_sync(this._handle_json_body, body, shape)
        this._inject_response_metadata(parsed, response["headers"])
        return parsed


class StreamParserFactory(AioResponseParserFactory):
    """The response parsers of the stream clients' session: epoch-second timestamps, base64
    blobs, big JSON bodies parsed off the loop."""

    def __init__(self) -> None:
        super().__init__()
        self.set_parser_defaults(**_SETTINGS)

    def create_parser(self, protocol_name: str) -> Any:
        if protocol_name == "json":
            return _OffloadingJSONParser(**_SETTINGS)
        return super().create_parser(protocol_name)
