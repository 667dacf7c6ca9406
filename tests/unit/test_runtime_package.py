"""The `runtime` target's package handling, environment variables, defaults and config checks."""

from __future__ import annotations

import os
import stat
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest

from poller.config.reader import ConfigError
from poller.config.settings import RuntimeTargetSettings
from poller.targets.base import TargetSettingError
from poller.targets.runtime.environment import exit_status
from poller.targets.runtime.package import (
    FunctionIdentity,
    Package,
    check_bootstrap,
    check_source,
    find_bootstrap,
    lambda_environment,
    prepare_package,
)
from poller.wiring import parse_settings, runtime_concurrency

SQS = "arn:aws:sqs:us-east-1:123456789012:orders"
KINESIS = "arn:aws:kinesis:us-east-1:123456789012:stream/orders"


def write(path: Path, text: str, mode: int = 0o644) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)
    return path


def zip_dir(source: Path, archive: Path) -> Path:
    """A zip as `zip -r` makes it: unix modes in external_attr."""
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(source.rglob("*")):
            zipped.write(path, path.relative_to(source))
    return archive


def test_a_zip_package_keeps_its_executable_bits(tmp_path: Path) -> None:
    source = tmp_path / "src"
    write(source / "bootstrap", "#!/bin/sh\n", 0o755)
    write(source / "lib" / "data.txt", "data")
    package = prepare_package(zip_dir(source, tmp_path / "code.zip"), [], tmp_path / "root")
    bootstrap = package.task_root / "bootstrap"
    assert bootstrap.stat().st_mode & stat.S_IXUSR
    assert (package.task_root / "lib" / "data.txt").read_text() == "data"
    assert find_bootstrap(package) == (bootstrap, "")


def test_zip_entries_cannot_escape_the_task_root(tmp_path: Path) -> None:
    archive = tmp_path / "evil.zip"
    with zipfile.ZipFile(archive, "w") as zipped:
        zipped.writestr("../../escaped.txt", "x")
        link = zipfile.ZipInfo("link")
        link.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(link, "../../../etc/passwd")
        inner = zipfile.ZipInfo("lib/libfoo.so")
        inner.external_attr = (stat.S_IFLNK | 0o777) << 16
        zipped.writestr(inner, "libfoo.so.1")
    package = prepare_package(archive, [], tmp_path / "root")
    assert not (tmp_path / "escaped.txt").exists()
    assert (package.task_root / "escaped.txt").exists()  # ZipFile strips the `..` parts
    assert not (package.task_root / "link").exists()
    assert os.readlink(package.task_root / "lib" / "libfoo.so") == "libfoo.so.1"


def test_layers_merge_in_order_and_later_ones_win(tmp_path: Path) -> None:
    code = tmp_path / "code"
    write(code / "app.py", "")
    first, second = tmp_path / "one", tmp_path / "two"
    write(first / "python" / "shared.py", "WHO = 1")
    write(first / "python" / "only_one.py", "")
    write(second / "python" / "shared.py", "WHO = 2")
    package = prepare_package(code, [first, zip_dir(second, tmp_path / "two.zip")], tmp_path / "r")
    assert (package.opt / "python" / "shared.py").read_text() == "WHO = 2"
    assert (package.opt / "python" / "only_one.py").exists()
    assert package.runtime_dir.is_dir()


def test_bootstrap_missing_or_not_executable_says_so_as_lambda_does(tmp_path: Path) -> None:
    package = Package(tmp_path / "task", tmp_path / "opt", tmp_path / "runtime")
    path, message = find_bootstrap(package)
    assert path is None
    assert message.startswith("Couldn't find valid bootstrap(s): [")
    assert str(package.task_root / "bootstrap") in message
    write(package.task_root / "bootstrap", "#!/bin/sh\n", 0o644)
    path, message = find_bootstrap(package)
    assert path is None and message.endswith("bootstrap: permission denied")


def test_a_bootstrap_in_a_layer_is_found(tmp_path: Path) -> None:
    package = Package(tmp_path / "task", tmp_path / "opt", tmp_path / "runtime")
    bootstrap = write(package.opt / "bootstrap", "#!/bin/sh\n", 0o755)
    assert find_bootstrap(package) == (bootstrap, "")


def _package(root: Path, bootstrap_mode: int | None, *, zipped: bool = False) -> Path:
    root.mkdir(parents=True)
    write(root / "function.sh", "handler() { :; }\n")
    if bootstrap_mode is not None:
        write(root / "bootstrap", "#!/bin/sh\n", bootstrap_mode)
    return zip_dir(root, root.with_suffix(".zip")) if zipped else root


@pytest.mark.parametrize("zipped", [False, True], ids=["directory", "zip"])
def test_a_custom_runtime_needs_an_executable_bootstrap_before_it_starts(
    tmp_path: Path, zipped: bool
) -> None:
    executable = _package(tmp_path / "ok", 0o755, zipped=zipped)
    missing = _package(tmp_path / "none", None, zipped=zipped)
    plain = _package(tmp_path / "plain", 0o644, zipped=zipped)
    check_bootstrap(executable, [])
    check_bootstrap(missing, [executable])  # from a layer, as Lambda's /opt/bootstrap
    with pytest.raises(TargetSettingError, match="has none; add an executable bootstrap") as none:
        check_bootstrap(missing, [missing])
    assert none.value.key == ("code",)
    with pytest.raises(TargetSettingError, match=r"bootstrap in .* is not executable") as plain_one:
        check_bootstrap(plain, [executable])  # the package's own comes first, as in Lambda
    assert plain_one.value.key == ("code",)
    with pytest.raises(TargetSettingError, match="is not executable") as layered:
        check_bootstrap(missing, [executable, plain])  # the last layer's wins
    assert layered.value.key == ("layers", 1)


def test_check_source_names_what_is_wrong(tmp_path: Path) -> None:
    assert check_source(str(tmp_path), "code") == tmp_path.resolve()
    with pytest.raises(ValueError, match="does not exist"):
        check_source(str(tmp_path / "missing"), "code")
    not_zip = write(tmp_path / "code.zip", "not a zip")
    with pytest.raises(ValueError, match=r"layer .* neither a directory nor a \.zip"):
        check_source(str(not_zip), "layer")


def settings(**keys: object) -> RuntimeTargetSettings:
    return RuntimeTargetSettings.model_validate(
        {"type": "runtime", "code": ".", "handler": "app.handler", **keys}
    )


def environment(target: RuntimeTargetSettings, tmp_path: Path) -> dict[str, str]:
    package = Package(tmp_path / "task", tmp_path / "opt", tmp_path / "runtime")
    identity = FunctionIdentity("orders", "eu-west-1", {"sqs": "http://127.0.0.1:5000"})
    inherited = {
        "PATH": "/usr/bin:/bin",
        "HOME": "/home/poller",
        "AWS_ACCESS_KEY_ID": "AKIDPOLLER",
        "AWS_SECRET_ACCESS_KEY": "secret",
        "POLLER_CONFIG": "/etc/poller.yaml",  # poller's own: not the function's business
    }
    return lambda_environment(
        target,
        identity,
        package,
        api_address="127.0.0.1:4321",
        tmp_dir=tmp_path / "tmp",
        log_stream="2024/01/01/[$LATEST]abc",
        inherited=inherited,
    )


def test_the_environment_has_lambdas_variables(tmp_path: Path) -> None:
    env = environment(settings(memory_size=512, environment={"STAGE": "dev"}), tmp_path)
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    assert env["AWS_LAMBDA_RUNTIME_API"] == "127.0.0.1:4321"
    assert env["_HANDLER"] == "app.handler"
    assert env["LAMBDA_TASK_ROOT"] == str(tmp_path / "task")
    assert env["LAMBDA_RUNTIME_DIR"] == str(tmp_path / "runtime")
    assert env["AWS_LAMBDA_FUNCTION_NAME"] == "orders"
    assert env["AWS_LAMBDA_FUNCTION_VERSION"] == "$LATEST"
    assert env["AWS_LAMBDA_FUNCTION_MEMORY_SIZE"] == "512"
    assert env["AWS_LAMBDA_LOG_GROUP_NAME"] == "/aws/lambda/orders"
    assert env["AWS_LAMBDA_LOG_STREAM_NAME"] == "2024/01/01/[$LATEST]abc"
    assert env["AWS_LAMBDA_INITIALIZATION_TYPE"] == "on-demand"
    assert env["AWS_REGION"] == env["AWS_DEFAULT_REGION"] == "eu-west-1"
    assert env["AWS_EXECUTION_ENV"] == f"AWS_Lambda_{version}"
    assert env["TZ"] == ":UTC"
    assert env["TMPDIR"] == str(tmp_path / "tmp")
    assert env["AWS_ACCESS_KEY_ID"] == "AKIDPOLLER"
    assert env["AWS_ENDPOINT_URL_SQS"] == "http://127.0.0.1:5000"
    assert env["STAGE"] == "dev"
    assert "POLLER_CONFIG" not in env
    opt = tmp_path / "opt"
    assert env["PATH"] == f"/usr/bin:/bin:{opt}/bin"
    assert env["PYTHONPATH"].split(":") == [
        str(tmp_path / "task"),
        f"{opt}/python/lib/{version}/site-packages",
        f"{opt}/python",
    ]
    assert env["LD_LIBRARY_PATH"].split(":")[-1] == f"{opt}/lib"


def test_environment_overrides_credentials_and_region(tmp_path: Path) -> None:
    env = environment(
        settings(environment={"AWS_ACCESS_KEY_ID": "AKIDFUNCTION", "AWS_REGION": "us-west-2"}),
        tmp_path,
    )
    assert env["AWS_ACCESS_KEY_ID"] == "AKIDFUNCTION"
    assert env["AWS_REGION"] == "us-west-2"


def test_a_custom_runtime_has_no_execution_env_nor_pythonpath(tmp_path: Path) -> None:
    env = environment(settings(runtime="provided"), tmp_path)
    assert "AWS_EXECUTION_ENV" not in env
    assert "PYTHONPATH" not in env


def config(target: str, source: str = SQS, extra: str = "") -> str:
    return (
        textwrap.dedent(
            f"""\
        mappings:
          - name: orders
            source: {source}
            target: {target}
        """
        )
        + extra
    )


def test_default_concurrency_is_the_mappings_own() -> None:
    target = "{type: runtime, code: ., handler: app.handler}"
    sqs = parse_settings(config(target), "t.yaml", {}).mappings[0]
    assert runtime_concurrency(sqs) == 5
    scaled = parse_settings(
        config(target, extra="    scaling_config: {maximum_concurrency: 40}\n"), "t.yaml", {}
    ).mappings[0]
    assert runtime_concurrency(scaled) == 40
    huge = parse_settings(
        config(target, extra="    scaling_config: {maximum_concurrency: 1000}\n"), "t.yaml", {}
    ).mappings[0]
    assert runtime_concurrency(huge) == 100
    stream = parse_settings(
        config(target, KINESIS, "    starting_position: LATEST\n    parallelization_factor: 3\n"),
        "t.yaml",
        {},
    ).mappings[0]
    assert runtime_concurrency(stream) == 30


def test_reserved_variables_in_environment_are_config_errors() -> None:
    target = "{type: runtime, code: ., handler: a.b, environment: {_HANDLER: x, STAGE: dev, AWS_LAMBDA_RUNTIME_API: y, AWS_REGION: eu-west-1}}"  # noqa: E501
    with pytest.raises(ConfigError) as raised:
        parse_settings(config(target), "t.yaml", {})
    messages = [problem.format() for problem in raised.value.problems]
    assert len(messages) == 2, messages
    assert any("target.environment._HANDLER" in m and "reserved" in m for m in messages)
    assert any("AWS_LAMBDA_RUNTIME_API" in m for m in messages)


@pytest.mark.parametrize(
    ("returncode", "expected"),
    [
        (0, "exit status 0"),
        (1, "exit status 1"),
        (-9, "signal: killed"),
        (-15, "signal: terminated"),
        (-11, "signal: segmentation fault"),
        (-6, "signal: aborted"),
    ],
)
def test_exit_status_reads_like_lambdas(returncode: int, expected: str) -> None:
    assert exit_status(returncode) == expected
