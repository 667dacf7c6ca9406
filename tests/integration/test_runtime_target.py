"""The `runtime` target: Lambda packages run through awslambdaric or a `bootstrap`, behind SQS
mappings against moto's server, and the target on its own for the init failures and for the
task group that owns everything it runs in the background."""

from __future__ import annotations

import json
import os
import re
import signal
import time
import zipfile
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from poller.config.settings import RuntimeTargetSettings
from poller.targets import InvocationRequest, Outcome, RuntimeTarget
from poller.targets.runtime.environment import READER_GRACE
from tests.support.config import config_yaml
from tests.support.daemon import events_total, invocations_total, running, settings_from
from tests.support.output import output_lines
from tests.support.queues import ACCOUNT, REGION, Queue, depth, make_queue, receive_all, send
from tests.support.wait import eventually

FUNCTIONS = Path(__file__).resolve().parents[1] / "fixtures" / "functions"
PYTHON_APP = FUNCTIONS / "python_app"
PROVIDED_APP = FUNCTIONS / "provided_app"
TRACE = "Root=1-5f3a8b2c-0123456789abcdef01234567;Parent=89abcdef01234567;Sampled=1"


def runtime_yaml(moto: str, queue: Queue, target: dict[str, Any], **keys: Any) -> str:
    """One SQS mapping named `orders` with a runtime target; `keys` become mapping keys."""
    mapping = {"source": queue.arn, "target": {"type": "runtime", **target}, **keys}
    return config_yaml(moto, [mapping], shutdown_timeout=5)


def records(out_dir: Path, function: str = "orders") -> list[dict[str, Any]]:
    """What the handlers appended to $OUT_DIR/<function>.jsonl, one dict per invocation."""
    path = out_dir / f"{function}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


def runtime_target(app: Any) -> RuntimeTarget:
    target = app.mappings[0].target
    assert isinstance(target, RuntimeTarget)
    return target


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


# --- end to end: SQS → runtime target -------------------------------------------------------


async def test_python_package_runs_warm_through_awslambdaric(
    moto: str, sqs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = await make_queue(sqs, "orders")
    target = {
        "code": str(PYTHON_APP),
        "handler": "app.handler",
        "timeout_seconds": 3,
        "memory_size": 192,
        "concurrency": 1,
        "environment": {"OUT_DIR": str(tmp_path), "STAGE": "test"},
    }
    config = runtime_yaml(moto, queue, target, batch_size=1)
    async with running(settings_from(config)) as app:
        # One message at a time: each invocation lands on the same warm environment.
        for index in range(3):
            await send(sqs, queue.url, [f"m{index}"])
            await eventually(lambda n=index + 1: events_total(app, "deleted") == n, timeout=15)
        assert await depth(sqs, queue.url) == (0, 0)
    seen = records(tmp_path)
    assert [r["count"] for r in seen] == [1, 2, 3]  # module state survived: warm reuse
    assert len({r["pid"] for r in seen}) == 1
    assert [r["bodies"] for r in seen] == [["m0"], ["m1"], ["m2"]]
    for record in seen:
        assert 0 < record["remaining_ms"] <= 3000
    first = seen[0]
    environ = first["environ"]
    assert environ["AWS_LAMBDA_FUNCTION_NAME"] == "orders"
    assert environ["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "192"
    assert environ["AWS_EXECUTION_ENV"].startswith("AWS_Lambda_python3.")
    assert environ["AWS_REGION"] == "us-east-1"
    assert environ["TZ"] == ":UTC"
    assert environ["STAGE"] == "test"
    assert environ["_X_AMZN_TRACE_ID"].startswith("Root=1-")
    assert first["cwd"] == environ["LAMBDA_TASK_ROOT"]
    assert first["memory_limit_in_mb"] == "192"
    assert first["invoked_function_arn"] == "arn:aws:lambda:us-east-1:123456789012:function:orders"
    assert re.fullmatch(r"\d{4}/\d{2}/\d{2}/\[\$LATEST\][0-9a-f]{32}", first["log_stream_name"])
    # What the handler printed became JSON lines tagged with the function and request.
    printed = [line for line in output_lines(capsys.readouterr().out) if line["request_id"]]
    handled = [line for line in printed if line["output"] == "handling 1 records"]
    assert [line["request_id"] for line in handled] == [r["request_id"] for r in seen]
    assert all(line["function"] == "orders" and line["level"] == "INFO" for line in handled)
    assert gone(first["pid"])  # shutdown ended the environment


async def test_provided_runtime_runs_a_bash_bootstrap(
    moto: str, sqs: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    queue = await make_queue(sqs, "orders")
    target = {
        "code": str(PROVIDED_APP),
        "handler": "function.handler",
        "runtime": "provided",
        "timeout_seconds": 3,
        "concurrency": 2,
        "environment": {"OUT_DIR": str(tmp_path)},
    }
    await send(sqs, queue.url, [f"m{i}" for i in range(6)])
    async with running(settings_from(runtime_yaml(moto, queue, target, batch_size=2))) as app:
        await eventually(lambda: events_total(app, "deleted") == 6, timeout=20)
        assert invocations_total(app, "function_error") == 0
    seen = records(tmp_path)
    assert len(seen) == invocations_total(app, "success") >= 3
    assert all(r["trace"].startswith("Root=1-") and r["bytes"] > 100 for r in seen)
    assert len({r["pid"] for r in seen}) <= 2  # at most two warm environments
    stderr_lines = [
        line for line in output_lines(capsys.readouterr().out) if "bash handler" in line["output"]
    ]
    assert {line["request_id"] for line in stderr_lines} == {r["request_id"] for r in seen}


@pytest.mark.parametrize(
    ("target", "replaced"),
    [
        pytest.param({"code": str(PYTHON_APP), "handler": "app.fail"}, False, id="handler-error"),
        pytest.param({"code": str(PYTHON_APP), "handler": "broken.handler"}, True, id="import"),
        pytest.param(
            {"code": str(PROVIDED_APP), "handler": "app.handler", "runtime": "provided"},
            True,
            id="missing-handler-file",
        ),
        pytest.param(
            {"code": str(PYTHON_APP), "handler": "app.hog", "memory_size": 128}, True, id="hog"
        ),
    ],
)
async def test_failures_leave_messages_to_the_queues_redrive(
    moto: str, sqs: Any, tmp_path: Path, target: dict[str, Any], replaced: bool
) -> None:
    # SQS rules: a function error deletes nothing; the message returns after its visibility
    # timeout and, after maxReceiveCount receives, goes to the dead-letter queue.
    queue = await make_queue(sqs, "orders", visibility_timeout=1, max_receive_count=2)
    await send(sqs, queue.url, ["doomed"])
    target = {**target, "timeout_seconds": 5, "environment": {"OUT_DIR": str(tmp_path)}}
    async with running(settings_from(runtime_yaml(moto, queue, target, batch_size=1))) as app:

        async def in_dlq() -> bool:
            return (await depth(sqs, queue.dlq_url or ""))[0] == 1

        await eventually(in_dlq, timeout=30)
        assert invocations_total(app, "function_error") >= 2
        assert invocations_total(app, "success") == 0
        assert events_total(app, "deleted") == 0
        started = runtime_target(app).environments_started
    dead = await receive_all(sqs, queue.dlq_url or "")
    assert [m["Body"] for m in dead] == ["doomed"]
    seen = records(tmp_path)
    if replaced:
        # Each attempt ran in a fresh environment (or none could start).
        assert len({r["pid"] for r in seen}) == len(seen)
    else:
        assert len(seen) >= 2 and len({r["pid"] for r in seen}) == 1 and started == 1


async def test_a_timeout_replaces_the_environment_and_the_retry_succeeds(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    queue = await make_queue(sqs, "orders", visibility_timeout=1)
    await send(sqs, queue.url, ["slow-once"])
    target = {
        "code": str(PYTHON_APP),
        "handler": "app.slow_first",
        "timeout_seconds": 1,
        "concurrency": 1,
        "environment": {"OUT_DIR": str(tmp_path)},
    }
    async with running(settings_from(runtime_yaml(moto, queue, target, batch_size=1))) as app:
        await eventually(lambda: events_total(app, "deleted") == 1, timeout=20)
        assert invocations_total(app, "timeout") == 1
        assert invocations_total(app, "success") == 1
    first, second = records(tmp_path)
    assert first["receive_counts"] == ["1"] and second["receive_counts"] == ["2"]
    assert first["pid"] != second["pid"]
    assert gone(first["pid"])  # the timed-out runtime was killed


async def test_concurrency_two_under_a_mapping_wanting_four_throttles_and_loses_nothing(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    queue = await make_queue(sqs, "orders")
    sent = [f"m{i}" for i in range(12)]
    await send(sqs, queue.url, sent)
    target = {
        "code": str(PYTHON_APP),
        "handler": "app.sleepy",
        "timeout_seconds": 5,
        "concurrency": 2,
        "environment": {"OUT_DIR": str(tmp_path)},
    }
    config = runtime_yaml(
        moto, queue, target, batch_size=1, scaling_config={"maximum_concurrency": 4}
    )
    async with running(settings_from(config)) as app:
        await eventually(lambda: events_total(app, "deleted") == 12, timeout=40)
        assert invocations_total(app, "throttled") > 0
        assert invocations_total(app, "function_error") == 0
        assert runtime_target(app).environments_started == 2
    seen = records(tmp_path)
    assert {body for r in seen for body in r["bodies"]} == set(sent)
    assert len({r["pid"] for r in seen}) == 2
    assert await depth(sqs, queue.url) == (0, 0)


async def test_layers_are_merged_and_visible_to_the_handler(
    moto: str, sqs: Any, tmp_path: Path
) -> None:
    layer_zip = tmp_path / "layer_two.zip"
    with zipfile.ZipFile(layer_zip, "w") as zipped:
        zipped.write(FUNCTIONS / "layer_two" / "python" / "shared.py", "python/shared.py")
    queue = await make_queue(sqs, "orders")
    await send(sqs, queue.url, ["m"])
    target = {
        "code": str(PYTHON_APP),
        "handler": "app.layered",
        "layers": [str(FUNCTIONS / "layer_one"), str(layer_zip)],
        "environment": {"OUT_DIR": str(tmp_path)},
    }
    async with running(settings_from(runtime_yaml(moto, queue, target))) as app:
        await eventually(lambda: events_total(app, "deleted") == 1, timeout=15)
    (seen,) = records(tmp_path)
    assert seen["who"] == "layer_two"  # the later layer wins
    assert seen["only_in_one"] is True  # what only the first layer has is kept
    assert seen["tool"] is True  # opt/bin is on PATH, its executables still executable


# --- the target on its own: init failures, back-off, shutdown --------------------------------


def make_target(
    tmp_path: Path, init_timeout: float = 0.5, **keys: Any
) -> tuple[RuntimeTarget, list[tuple[Any, ...]]]:
    settings = RuntimeTargetSettings.model_validate(
        {"type": "runtime", "code": str(PYTHON_APP), "handler": "app.handler", **keys}
    )
    printed: list[tuple[Any, ...]] = []
    target = RuntimeTarget(
        settings,
        mapping_name="fn",
        region=REGION,
        account=ACCOUNT,
        default_concurrency=2,
        init_timeout=init_timeout,
        on_output=lambda *line: printed.append(line),
    )
    return target, printed


def request(request_id: str = "req-1") -> InvocationRequest:
    return InvocationRequest(b'{"Records": []}', request_id, TRACE)


def bootstrap_package(tmp_path: Path, script: str, mode: int = 0o755) -> Path:
    code = tmp_path / "code"
    code.mkdir()
    (code / "bootstrap").write_text(script)
    (code / "bootstrap").chmod(mode)
    return code


def error_of(result: Any) -> dict[str, Any]:
    assert result.outcome is Outcome.FUNCTION_ERROR and result.function_error == "Unhandled"
    payload: dict[str, Any] = json.loads(result.payload)
    return payload


@pytest.mark.parametrize(
    ("keys", "error_type", "message"),
    [
        ({"handler": "app.fail"}, "ValueError", "cannot process this batch"),
        (
            {"code": str(PROVIDED_APP), "handler": "function.handler", "runtime": "provided"},
            "HandlerError",
            "handler failed",
        ),
    ],
    ids=["python", "provided"],
)
async def test_a_handler_error_is_logged_at_error_as_lambda_logs_it(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    keys: dict[str, Any],
    error_type: str,
    message: str,
) -> None:
    target, _ = make_target(tmp_path, init_timeout=5, **keys)
    async with target:
        payload = b'{"Records": [], "fail": "fail"}'
        error = error_of(await target.invoke(InvocationRequest(payload, "req-f", TRACE)))
    logged = [line for line in output_lines(capsys.readouterr().out) if "errorType" in line]
    assert [(line["level"], line["function"], line["request_id"]) for line in logged] == [
        ("ERROR", "fn", "req-f")
    ]
    (line,) = logged
    assert (line["errorType"], line["errorMessage"]) == (error_type, message)
    assert line["stackTrace"] == error.get("stackTrace", [])
    if error_type == "ValueError":
        assert any("in fail" in frame for frame in line["stackTrace"])


async def test_an_import_error_is_reported_and_restarts_back_off(tmp_path: Path) -> None:
    target, printed = make_target(tmp_path, handler="broken.handler")
    async with target:
        started = time.monotonic()
        first = error_of(await target.invoke(request("a")))
        first_took = time.monotonic() - started
        second = error_of(await target.invoke(request("b")))
        second_took = time.monotonic() - started - first_took
    assert first["errorType"] == second["errorType"] == "Runtime.ImportModuleError"
    assert "Unable to import module 'broken'" in first["errorMessage"]
    assert first_took < 5
    assert second_took >= 0.9  # 1 s before starting again: never a tight loop
    assert any("ImportModuleError" in line[2] and line[1] is None for line in printed)


async def test_a_runtime_that_never_asks_for_work_is_killed(tmp_path: Path) -> None:
    code = bootstrap_package(tmp_path, '#!/bin/bash\necho $$ > "$TMPDIR/../pid"\nsleep 60\n')
    target, _ = make_target(tmp_path, code=str(code), runtime="provided")
    async with target:
        error = error_of(await target.invoke(request()))
    assert error["errorType"] == "Runtime.Unknown"
    assert "within 0.50 seconds" in error["errorMessage"]


async def test_a_crash_before_next_is_an_exit_error(tmp_path: Path) -> None:
    code = bootstrap_package(tmp_path, "#!/bin/bash\necho starting\nexit 2\n")
    target, printed = make_target(tmp_path, code=str(code), runtime="provided")
    async with target:
        error = error_of(await target.invoke(request("req-9")))
    assert error == {
        "errorMessage": "RequestId: req-9 Error: Runtime exited with error: exit status 2",
        "errorType": "Runtime.ExitError",
    }
    assert ("fn", None, "starting") in printed


async def test_a_bootstrap_no_longer_executable_is_an_invalid_entrypoint(
    tmp_path: Path,
) -> None:
    # Building the target refuses a bootstrap that cannot run (test_runtime_package); one that
    # loses its execute bit afterwards fails each start as Lambda's does.
    code = bootstrap_package(tmp_path, "#!/bin/bash\n")
    target, _ = make_target(tmp_path, code=str(code), runtime="provided")
    (code / "bootstrap").chmod(0o644)
    async with target:
        error = error_of(await target.invoke(request()))
    assert error["errorType"] == "Runtime.InvalidEntrypoint"
    assert error["errorMessage"].endswith("bootstrap: permission denied")


async def test_a_too_large_response_fails_and_the_next_invocation_gets_a_live_runtime(
    tmp_path: Path,
) -> None:
    target, _ = make_target(tmp_path, handler="app.big", concurrency=1)
    async with target:
        first = error_of(await target.invoke(request("a")))
        # awslambdaric exits after its response is refused; the next call must not see that.
        second = error_of(await target.invoke(request("b")))
    assert first["errorType"] == second["errorType"] == "Function.ResponseSizeTooLarge"


async def test_exit_ends_every_environment_and_removes_its_files(tmp_path: Path) -> None:
    target, _ = make_target(tmp_path, handler="app.handler", concurrency=2)
    async with target:
        first = await target.invoke(request("a"))
        assert first.outcome is Outcome.SUCCESS
        pid = json.loads(first.payload or b"")["pid"]
        root = Path(json.loads(first.payload or b"")["environ"]["LAMBDA_TASK_ROOT"]).parent
        assert root.is_dir()
    assert gone(pid)
    assert not root.exists()
    closed = await target.invoke(request("b"))
    assert closed.outcome is Outcome.INVOKE_ERROR


# --- the target's task group: every task it starts ends with it -------------------------------


def started_by(task_id: int) -> list[anyio.TaskInfo]:
    """Running tasks started in task groups that `task_id` hosts, or in groups of those tasks."""
    tasks = anyio.get_running_tasks()
    parents = {task.id: task.parent_id for task in tasks}

    def descends(task: anyio.TaskInfo) -> bool:
        parent = task.parent_id
        while parent is not None:
            if parent == task_id:
                return True
            parent = parents.get(parent)
        return False

    return [task for task in tasks if descends(task)]


def named(tasks: list[anyio.TaskInfo], suffix: str) -> list[anyio.TaskInfo]:
    return [task for task in tasks if (task.name or "").endswith(suffix)]


async def test_a_retired_environments_clean_up_runs_in_the_group_and_exit_leaves_no_task(
    tmp_path: Path,
) -> None:
    target, _ = make_target(tmp_path, handler="app.slow_first", timeout_seconds=1, concurrency=2)
    me = anyio.get_current_task().id
    assert started_by(me) == []
    async with target:
        timed_out = await target.invoke(InvocationRequest(b'{"sleep": 30}', "slow", TRACE))
        assert timed_out.outcome is Outcome.TIMEOUT
        # No await since the retire: its clean-up is a task of the group this task entered.
        (clean_up,) = named(started_by(me), "RuntimeTarget._clean_up")
        assert clean_up.parent_id == me
        await eventually(lambda: not named(started_by(me), "RuntimeTarget._clean_up"), timeout=10)
        warm = await target.invoke(request("warm"))
        assert warm.outcome is Outcome.SUCCESS
        pid = json.loads(warm.payload or b"")["pid"]
        # The warm environment's readers and watcher run in the group too, until exit.
        running = started_by(me)
        assert len(named(running, "Environment._pump")) == 2
        assert len(named(running, "Environment._watch")) == 1
        assert [task.parent_id for task in named(running, "Environment._serve")] == [me]
    assert gone(pid)
    assert started_by(me) == []
    assert {task.id for task in running}.isdisjoint(t.id for t in anyio.get_running_tasks())


async def test_a_child_that_escaped_with_the_pipes_does_not_keep_a_reader_or_hold_up_exit(
    tmp_path: Path,
) -> None:
    # The escaped child leaves the process group, so killing the runtime does not close its
    # stdout and stderr: the readers never see EOF and have to be cancelled.
    script = (
        "#!/bin/bash\n"
        "setsid bash -c 'echo $$ > \"$OUT_DIR/escaped\"; exec sleep 60' &\n"
        'while [ ! -s "$OUT_DIR/escaped" ]; do sleep 0.01; done\n'
        "exec sleep 60\n"
    )
    code = bootstrap_package(tmp_path, script)
    target, _ = make_target(
        tmp_path,
        init_timeout=2,  # time enough to escape, even on a loaded machine
        code=str(code),
        runtime="provided",
        environment={"OUT_DIR": str(tmp_path)},
    )
    me = anyio.get_current_task().id
    escaped = tmp_path / "escaped"
    try:
        async with target:
            # The runtime never asks for work: the init timeout retires it.
            assert error_of(await target.invoke(request()))["errorType"] == "Runtime.Unknown"
            assert named(started_by(me), "Environment._pump")
            started = time.monotonic()
        took = time.monotonic() - started
        assert started_by(me) == []
        assert took < READER_GRACE + 3  # the readers' grace, then they are cancelled
        assert not gone(int(escaped.read_text()))  # the pipes really stayed open
    finally:
        if escaped.exists():
            os.kill(int(escaped.read_text()), signal.SIGKILL)


async def test_exit_still_ends_the_environments_when_the_caller_is_cancelled(
    tmp_path: Path,
) -> None:
    target, _ = make_target(tmp_path, handler="app.handler")
    me = anyio.get_current_task().id
    with anyio.CancelScope() as scope:
        async with target:
            result = await target.invoke(request())
            assert result.outcome is Outcome.SUCCESS
            scope.cancel()
            await anyio.lowlevel.checkpoint()  # the cancellation arrives here
    assert scope.cancelled_caught
    assert gone(json.loads(result.payload or b"")["pid"])
    assert started_by(me) == []


async def test_an_error_inside_the_target_leaves_it_unwrapped(tmp_path: Path) -> None:
    # The daemon's caller catches OSError (an ops port already taken): not an ExceptionGroup.
    target, _ = make_target(tmp_path, handler="app.handler")
    with pytest.raises(OSError, match="address in use"):
        async with target:
            assert (await target.invoke(request())).outcome is Outcome.SUCCESS
            raise OSError("address in use")


async def test_a_target_used_without_entering_it_fails_loudly(tmp_path: Path) -> None:
    target, _ = make_target(tmp_path)
    with pytest.raises(RuntimeError, match="outside `async with`"):
        await target.invoke(request())
    assert target.environments_started == 0
