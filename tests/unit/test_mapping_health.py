"""A mapping's health as independent conditions: each part (target, source, lease table, every
shard's reads and checkpoint writes) raises and clears its own, and the mapping is degraded
while any is outstanding. First MappingStatus's rules, then the stream readers on fakes."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Sequence

import anyio
import pytest

from poller.checkpoints.base import Checkpoint, StoreUnavailable
from poller.checkpoints.lineage import ShardInfo
from poller.engine.invoker import Invoker
from poller.engine.lifecycle import Shutdown
from poller.ops.metrics import Metrics
from poller.ops.status import (
    LEASES,
    SOURCE,
    TARGET,
    MappingStatus,
    State,
    checkpointing,
    reading,
)
from poller.retry import Curve
from poller.sources.streams.shards import ReadResult
from poller.sources.streams.source import StreamSource
from poller.targets.base import InvokeResult, Outcome
from poller.wiring import stream_settler
from tests.fakes.checkpoints import MemoryStore
from tests.fakes.targets import OK, ScriptedTarget
from tests.support.wait import eventually
from tests.unit.test_shards import (
    FakeApi,
    FakeSettler,
    FakeShard,
    client_error,
    records,
    shard,
    stream_context,
    streaming,
)

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"

# -- the rules ----------------------------------------------------------------------------------


def _status() -> tuple[MappingStatus, Metrics]:
    metrics = Metrics()
    status = MappingStatus("orders", "uuid", STREAM, "python:m:f", metrics.for_mapping("orders"))
    return status, metrics


def _shown(metrics: Metrics) -> tuple[list[str], float | None]:
    """The states poller_mapping_state has at 1, and poller_mapping_up."""
    registry = metrics.registry
    current = [
        state.value
        for state in State
        if registry.get_sample_value(
            "poller_mapping_state", {"mapping": "orders", "state": state.value}
        )
        == 1
    ]
    return current, registry.get_sample_value("poller_mapping_up", {"mapping": "orders"})


def test_the_mapping_is_degraded_until_every_condition_is_cleared() -> None:
    status, metrics = _status()
    status.set(State.RUNNING)
    status.degraded(reading("a"), "shard a unreachable")
    status.degraded(checkpointing("b"), "checkpoint not stored")
    status.recovered(reading("b"))  # another shard's success: not a's, nor b's writes
    assert status.state is State.DEGRADED
    assert status.error == "shard a unreachable (and 1 more problem)"
    assert _shown(metrics) == (["degraded"], 1)
    status.recovered(reading("a"))
    assert (status.state, status.error) == (State.DEGRADED, "checkpoint not stored")
    status.recovered(checkpointing("b"))
    assert (status.state, status.error) == (State.RUNNING, None)
    assert _shown(metrics) == (["running"], 1)


def test_error_is_the_oldest_outstanding_condition_with_the_latest_words() -> None:
    status, _ = _status()
    status.set(State.RUNNING)
    status.degraded(TARGET, "target: throttled")
    status.degraded(LEASES, "lease table unreachable")
    status.degraded(SOURCE, "stream unreachable")
    assert status.error == "target: throttled (and 2 more problems)"
    status.degraded(TARGET, "target: invoke_error")  # raised again: keeps its place
    assert status.error == "target: invoke_error (and 2 more problems)"
    assert status.conditions == [TARGET, LEASES, SOURCE]
    status.recovered(TARGET)
    status.degraded(TARGET, "target: throttled")  # cleared and raised again: the newest
    assert status.conditions == [LEASES, SOURCE, TARGET]
    assert status.error == "lease table unreachable (and 2 more problems)"


def test_a_fatal_condition_fails_the_mapping_and_names_itself_first() -> None:
    status, metrics = _status()
    status.set(State.RUNNING)
    status.degraded(reading("a"), "shard a unreachable")
    status.failed(TARGET, "target: function not found")
    assert (status.state, status.error) == (
        State.FAILED,
        "target: function not found (and 1 more problem)",
    )
    assert _shown(metrics) == (["failed"], 0)
    status.recovered(TARGET)
    assert (status.state, status.error) == (State.DEGRADED, "shard a unreachable")
    status.failed(reading("a"), "shard a: access denied")  # the same part, now fatal
    assert (status.state, status.error) == (State.FAILED, "shard a: access denied")


def test_clearing_what_was_never_raised_changes_nothing() -> None:
    status, metrics = _status()
    status.recovered(reading("a"))
    assert (status.state, status.conditions) == (State.STARTING, [])
    assert _shown(metrics) == (["starting"], 0)


def test_with_every_condition_cleared_the_mapping_shows_where_it_is_in_its_life() -> None:
    status, _ = _status()
    status.degraded(SOURCE, "stream unreachable")  # the first listing failed
    assert status.state is State.DEGRADED
    status.recovered(SOURCE)
    assert status.state is State.STARTING  # listed, not reading yet
    status.set(State.FAILED, "internal error: boom")
    status.degraded(SOURCE, "stream unreachable")  # restarted after the crash
    status.recovered(SOURCE)
    assert (status.state, status.error) == (State.FAILED, "internal error: boom")


@pytest.mark.parametrize("state", [State.STOPPING, State.DISABLED])
def test_stopping_and_disabled_show_as_they_are(state: State) -> None:
    status, metrics = _status()
    status.set(State.RUNNING)
    status.degraded(reading("a"), "shard a unreachable")
    status.set(state)
    status.degraded(TARGET, "target: throttled")
    status.failed(SOURCE, "stream not found")
    assert (status.state, status.error) == (state, None)
    assert _shown(metrics) == ([state.value], 1 if state is State.STOPPING else 0)


def test_a_move_through_the_mappings_life_forgets_every_condition() -> None:
    status, _ = _status()
    status.set(State.RUNNING)
    status.degraded(reading("a"), "shard a unreachable")
    status.set(State.FAILED, "internal error: boom")  # the mapping's parts are gone
    assert status.conditions == []
    status.set(State.RUNNING)  # restarted
    assert (status.state, status.error) == (State.RUNNING, None)


# -- through the stream readers -------------------------------------------------------------------

Step = BaseException | anyio.Event | None


class ScriptedApi(FakeApi):
    """A FakeApi whose reads of a shard follow `script[shard]` first. A read takes entries
    until one decides it: an error is raised, None answers as usual, an event is waited for
    (a call that hangs, as GetRecords does against an endpoint gone silent, until the test
    lets it go on to the next entry). Past its script a shard reads as usual."""

    def __init__(self, shards: Sequence[FakeShard]) -> None:
        super().__init__(shards)
        self.script: defaultdict[str, list[Step]] = defaultdict(list)
        self.attempts: Counter[str] = Counter()  # reads begun, failed ones included
        self.listings = 0

    async def list_shards(self) -> list[ShardInfo]:
        self.listings += 1
        return await super().list_shards()

    async def read(self, iterator: str, limit: int) -> ReadResult:
        shard_id = iterator.split("|")[0]
        self.attempts[shard_id] += 1
        script = self.script[shard_id]
        while script:
            step = script.pop(0)
            if step is None:
                break
            if isinstance(step, anyio.Event):
                await step.wait()
                continue
            raise step
        return await super().read(iterator, limit)


async def test_one_shards_failing_reads_keep_the_mapping_degraded_while_another_reads_fine() -> (
    None
):
    api = ScriptedApi(
        [FakeShard(shard("a"), records(range(1, 6))), FakeShard(shard("b"), records(range(1, 6)))]
    )
    a_hangs, b_goes = anyio.Event(), anyio.Event()
    api.script["a"] = [client_error("InternalFailure"), a_hangs]  # fails, then hangs
    api.script["b"] = [b_goes, client_error("InternalFailure")]  # fails once after a, then reads
    async with streaming(api) as h:
        try:
            await eventually(lambda: api.attempts["a"] == 2)  # a failed and is stuck
            b_goes.set()
            # b's third read began: its second succeeded after the failure, and said so.
            await eventually(lambda: api.attempts["b"] >= 3)
            assert h.status.state is State.DEGRADED
            assert "shard a of" in (h.status.error or ""), h.status.error
            assert h.status.conditions == [reading("a")]
        finally:
            a_hangs.set()
        await eventually(lambda: h.settler.processed("a") == [1, 2, 3, 4, 5])
        assert h.status.state is State.RUNNING
    assert h.settler.processed("b") == [1, 2, 3, 4, 5]


class StuckStore(MemoryStore):
    """Refuses the first write of a position (the disk full), then holds every later one until
    `answers` is set (a store that stopped answering)."""

    def __init__(self) -> None:
        super().__init__()
        self.refused = 0
        self.answers = anyio.Event()

    async def put(self, mapping: str, stream_arn: str, shard_id: str, cp: Checkpoint) -> None:
        if cp.sequence_number is not None:
            if not self.refused:
                self.refused += 1
                raise StoreUnavailable("checkpoints.path 'state.db': disk full")
            await self.answers.wait()
        await super().put(mapping, stream_arn, shard_id, cp)


async def test_failing_checkpoint_writes_keep_the_mapping_degraded_while_reads_succeed() -> None:
    api = ScriptedApi([FakeShard(shard("a"), records(range(1, 11)))])
    store = StuckStore()
    read_fails = anyio.Event()
    # The first read answers; the second fails once the store refused a write; then reads.
    api.script["a"] = [None, read_fails, client_error("InternalFailure")]
    async with streaming(api, store=store, batch_size=5) as h:
        try:
            await eventually(lambda: store.refused == 1)
            read_fails.set()
            # The fourth read began: the third succeeded after the failed one, and said so.
            await eventually(lambda: api.attempts["a"] >= 4)
            assert h.status.state is State.DEGRADED
            assert "checkpoint not stored" in (h.status.error or ""), h.status.error
            assert h.status.conditions == [checkpointing("a")]
        finally:
            store.answers.set()
        await eventually(lambda: store.checkpoints.get("a") == Checkpoint("10"))
        await eventually(lambda: h.status.state is State.RUNNING)
    assert h.settler.processed() == list(range(1, 11))


async def test_a_reader_that_ends_clears_what_it_raised() -> None:
    api = ScriptedApi([FakeShard(shard("a")), FakeShard(shard("b"), records(range(1, 4)))])
    gone = anyio.Event()
    # Failing, then the shard is gone: trimmed from the listing, and its reads say so.
    api.script["a"] = [
        client_error("InternalFailure"),
        gone,
        client_error("ResourceNotFoundException"),
    ]
    async with streaming(api) as h:
        await eventually(lambda: api.attempts["a"] == 2)
        assert h.status.conditions == [reading("a")]
        del api.shards["a"]
        listed = api.listings
        # A listing without `a` went by, and the pass that took it in (the next one began).
        await eventually(lambda: api.listings >= listed + 2)
        gone.set()
        await eventually(lambda: "a" not in h.status.shards)
        assert (h.status.state, h.status.conditions) == (State.RUNNING, [])


async def test_a_target_held_back_keeps_the_mapping_degraded_while_reads_recover() -> None:
    api = ScriptedApi([FakeShard(shard("a"), records(range(1, 6)))])
    read_fails = anyio.Event()
    api.script["a"] = [None, read_fails, client_error("InternalFailure")]
    target = ScriptedTarget()
    held = anyio.Event()

    def respond(ids: list[str]) -> InvokeResult:
        if len(target.calls) > 1:
            return OK
        target.hold = held  # throttled, then the retry hangs (a target gone silent)
        return InvokeResult(Outcome.THROTTLED, status_code=429, detail="rate exceeded")

    target.respond = respond
    shutdown = Shutdown()
    context = stream_context(api, FakeSettler(), MemoryStore(), shutdown)
    tiny = Curve(base=0.001, cap=0.001)
    invoker = Invoker(target, context.metrics, context.status, shutdown=shutdown, curve=tiny)
    settler = stream_settler(
        context.mapping, invoker, kind="kinesis", destination=None, shutdown=shutdown
    )
    context = dataclasses.replace(context, settler=settler)
    status = context.status
    async with anyio.create_task_group() as tg:
        tg.start_soon(StreamSource(context, discovery_interval=0.05).run)
        try:
            await eventually(lambda: target.hold is held and target.active == 1)  # retry hangs
            read_fails.set()
            # The fourth read began: the third succeeded after the failed one, and said so.
            await eventually(lambda: api.attempts["a"] >= 4)
            assert status.state is State.DEGRADED
            assert "throttled: rate exceeded" in (status.error or ""), status.error
            assert status.conditions == [TARGET]
        finally:
            held.set()
        await eventually(lambda: status.state is State.RUNNING)
        assert target.delivered == ["1", "2", "3", "4", "5"] * 2  # the throttled try, the retry
        shutdown.begin(5.0)
