"""The template-written Kinesis record is the dict path's, byte for byte, for any input."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from poller.events.streams import KinesisRecords, kinesis_record, stream_record

STREAM = "arn:aws:kinesis:eu-west-1:123456789012:stream/clicks"
IDENTITY = "arn:aws:iam::123456789012:role/poller"

_TEXT = st.text(st.characters(codec="utf-8"), max_size=40)
_ARRIVAL = st.one_of(
    st.none(),
    st.integers(0, 4_000_000_000),
    st.floats(0, 4_000_000_000, allow_nan=False),
    st.datetimes(
        min_value=datetime(1971, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
    ),
)


@st.composite
def raw_records(draw: st.DrawFn) -> dict[str, Any]:
    raw: dict[str, Any] = {"SequenceNumber": str(draw(st.integers(0, 10**56)))}
    data = draw(st.one_of(st.binary(max_size=64), _TEXT, st.none()))
    if data is not None:
        raw["Data"] = data
    key = draw(st.one_of(_TEXT, st.none()))
    if key is not None:
        raw["PartitionKey"] = key
    arrival = draw(_ARRIVAL)
    if arrival is not None:
        raw["ApproximateArrivalTimestamp"] = arrival
    return raw


@settings(max_examples=300)
@given(raw=raw_records(), shard=_TEXT, region=_TEXT)
def test_the_template_writes_what_the_dict_path_writes(
    raw: dict[str, Any], shard: str, region: str
) -> None:
    fast = KinesisRecords(stream_arn=STREAM, region=region, invoke_identity_arn=IDENTITY)
    event = kinesis_record(
        raw, shard_id=shard, stream_arn=STREAM, region=region, invoke_identity_arn=IDENTITY
    )
    assert fast.record(raw, shard) == stream_record(event, kind="kinesis")
