"""What a `runtime` target's execution environments are made of: the unpacked deployment package,
the merged layers, and the environment variables Lambda sets.

Lambda mounts the package at /var/task and the layers at /opt. poller cannot mount anything, so
both are unpacked once per target into a private directory, and the environment variables
(`LAMBDA_TASK_ROOT`, `PYTHONPATH`, `PATH`, `LD_LIBRARY_PATH`) point there instead: code that uses
the variables, as Lambda's documentation asks, runs unchanged.
"""

from __future__ import annotations

import os
import shutil
import stat
import sys
import uuid
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from poller.config.settings import RuntimeTargetSettings
from poller.targets.base import SettingKey, TargetSettingError

# Variables passed from poller's own environment, so a function's SDK finds the credentials,
# profile, region and CA bundle poller itself uses (refreshing them as poller's would).
INHERITED = (
    "PATH",
    "HOME",
    "LANG",
    "LC_ALL",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_PROFILE",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_ROLE_ARN",
    "AWS_ROLE_SESSION_NAME",
    "AWS_WEB_IDENTITY_TOKEN_FILE",
    "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
    "AWS_CONTAINER_CREDENTIALS_FULL_URI",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN",
    "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE",
    "AWS_CA_BUNDLE",
    "AWS_STS_REGIONAL_ENDPOINTS",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "LD_LIBRARY_PATH",
)

# The SDKs' per-service endpoint variables, for the services poller's `aws.endpoints` names.
ENDPOINT_VARIABLES = {
    "sqs": "AWS_ENDPOINT_URL_SQS",
    "kinesis": "AWS_ENDPOINT_URL_KINESIS",
    "dynamodbstreams": "AWS_ENDPOINT_URL_DYNAMODB_STREAMS",
    "dynamodb": "AWS_ENDPOINT_URL_DYNAMODB",
    "lambda": "AWS_ENDPOINT_URL_LAMBDA",
    "sns": "AWS_ENDPOINT_URL_SNS",
    "s3": "AWS_ENDPOINT_URL_S3",
    "sts": "AWS_ENDPOINT_URL_STS",
}


def check_source(path_text: str, what: str, key: SettingKey | None = None) -> Path:
    """The absolute path of a package or layer: an existing directory or .zip; else
    TargetSettingError (a ValueError) for `key`, by default `(what,)`."""
    key = key or (what,)
    path = Path(path_text).expanduser().resolve()
    if path.is_dir():
        return path
    if not path.exists():
        raise TargetSettingError(
            f"{what} {path_text!r} does not exist (resolved to {path}); relative paths are "
            "taken from the directory poller runs in",
            key,
        )
    if not zipfile.is_zipfile(path):
        raise TargetSettingError(
            f"{what} {path_text!r} is neither a directory nor a .zip file", key
        )
    return path


def check_bootstrap(code: Path, layers: Sequence[Path]) -> None:
    """A `provided` runtime's entry point, checked without unpacking anything: an executable
    `bootstrap` at the top of the package, else of the last layer holding one (Lambda runs
    /var/task/bootstrap, else /opt/bootstrap, where later layers win). TargetSettingError if
    there is none or it cannot be run, for the package or layer at fault."""
    sources: list[tuple[Path, SettingKey]] = [(code, ("code",))]
    sources += [(layer, ("layers", index)) for index, layer in reversed(list(enumerate(layers)))]
    for source, key in sources:
        executable = _bootstrap_executable(source)
        if executable is None:
            continue
        if not executable:
            raise TargetSettingError(
                f"bootstrap in {source} is not executable; make it so (chmod +x bootstrap, "
                "and zip the package with its permissions)",
                key,
            )
        return
    where = f"{code} or its layers" if layers else str(code)
    raise TargetSettingError(
        "runtime provided runs a file named bootstrap at the top of the package or of a "
        f"layer, and {where} has none; add an executable bootstrap, or use runtime: python "
        "for a Python handler",
        ("code",),
    )


def _bootstrap_executable(source: Path) -> bool | None:
    """Whether `source`'s top-level `bootstrap` may be executed; None when it has none."""
    if source.is_dir():
        bootstrap = source / "bootstrap"
        return os.access(bootstrap, os.X_OK) if bootstrap.is_file() else None
    with zipfile.ZipFile(source) as zipped:
        try:
            info = zipped.getinfo("bootstrap")
        except KeyError:
            return None
    mode = info.external_attr >> 16
    # A symlink's target decides, and is only known once unpacked: let the start tell.
    return stat.S_ISLNK(mode) or bool(mode & 0o111)


@dataclass(frozen=True, slots=True)
class Package:
    """The directories every environment of one target shares (Lambda's /var/task and /opt)."""

    task_root: Path
    opt: Path
    runtime_dir: Path


def _extract(archive: Path, dest: Path) -> None:
    """Unzip keeping unix permissions (a `bootstrap` stays executable) and in-tree symlinks."""
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zipped:
        for info in zipped.infolist():
            mode = info.external_attr >> 16
            if stat.S_ISLNK(mode):
                # A symlink entry holds its target as data; kept only if it stays in the tree.
                link = root / info.filename
                target = zipped.read(info).decode()
                if (link.parent / target).resolve().is_relative_to(root):
                    link.parent.mkdir(parents=True, exist_ok=True)
                    link.unlink(missing_ok=True)
                    link.symlink_to(target)
                continue
            extracted = zipped.extract(info, root)  # ZipFile strips absolute and `..` parts
            if mode & 0o777 and not info.is_dir():
                os.chmod(extracted, stat.S_IMODE(mode))


def unpack(source: Path, dest: Path) -> None:
    """Copy a directory, or extract a .zip, into `dest`; files already there are overwritten."""
    dest.mkdir(parents=True, exist_ok=True)
    if source.is_dir():
        shutil.copytree(source, dest, symlinks=True, dirs_exist_ok=True)
    else:
        _extract(source, dest)


def prepare_package(code: Path, layers: Sequence[Path], root: Path) -> Package:
    """Unpack the code into `root/task` and merge the layers into `root/opt`, later ones winning."""
    package = Package(root / "task", root / "opt", root / "runtime")
    unpack(code, package.task_root)
    package.opt.mkdir(parents=True, exist_ok=True)
    for layer in layers:
        unpack(layer, package.opt)
    package.runtime_dir.mkdir(parents=True, exist_ok=True)
    return package


def find_bootstrap(package: Package) -> tuple[Path | None, str]:
    """A custom runtime's entry point: `bootstrap` in the package, else in a layer, as in Lambda.

    Returns the path, or None and the message of Lambda's `Runtime.InvalidEntrypoint`.
    """
    candidates = [package.task_root / "bootstrap", package.opt / "bootstrap"]
    for candidate in candidates:
        if candidate.is_file():
            if not os.access(candidate, os.X_OK):
                return None, f"fork/exec {candidate}: permission denied"
            return candidate, ""
    listed = " ".join(str(candidate) for candidate in candidates)
    return None, f"Couldn't find valid bootstrap(s): [{listed}]"


def log_stream_name() -> str:
    """A log stream name of Lambda's form, one per execution environment."""
    day = datetime.now(UTC).strftime("%Y/%m/%d")
    return f"{day}/[$LATEST]{uuid.uuid4().hex}"


def _joined(*parts: str | None) -> str:
    return os.pathsep.join(part for part in parts if part)


@dataclass(frozen=True, slots=True)
class FunctionIdentity:
    """What the environment variables say about the function and where poller's AWS is."""

    name: str
    region: str
    endpoints: Mapping[str, str]


def lambda_environment(
    settings: RuntimeTargetSettings,
    identity: FunctionIdentity,
    package: Package,
    *,
    api_address: str,
    tmp_dir: Path,
    log_stream: str,
    inherited: Mapping[str, str],
) -> dict[str, str]:
    """The environment of one execution environment: Lambda's variables, then `environment`.

    Lambda starts a function with a clean environment; so does poller, except for the
    variables that let the function's SDK reach AWS as poller does (INHERITED).
    """
    env = {key: inherited[key] for key in INHERITED if key in inherited}
    for service, url in identity.endpoints.items():
        if service in ENDPOINT_VARIABLES:
            env[ENDPOINT_VARIABLES[service]] = url
    task, opt = str(package.task_root), str(package.opt)
    env.update(
        {
            "AWS_REGION": identity.region,
            "AWS_DEFAULT_REGION": identity.region,
            "AWS_LAMBDA_RUNTIME_API": api_address,
            "_HANDLER": settings.handler,
            "LAMBDA_TASK_ROOT": task,
            "LAMBDA_RUNTIME_DIR": str(package.runtime_dir),
            "AWS_LAMBDA_FUNCTION_NAME": identity.name,
            "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(settings.memory_size),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{identity.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": log_stream,
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "TZ": ":UTC",
            # Lambda's /tmp is per sandbox; tempfile and most tools honour TMPDIR.
            "TMPDIR": str(tmp_dir),
            # Lambda's order: system directories first, /opt/bin and /opt/lib last.
            "PATH": _joined(inherited.get("PATH", os.defpath), f"{opt}/bin"),
            "LD_LIBRARY_PATH": _joined(
                inherited.get("LD_LIBRARY_PATH"), task, f"{task}/lib", f"{opt}/lib"
            ),
        }
    )
    if settings.runtime == "python":
        version = f"python{sys.version_info.major}.{sys.version_info.minor}"
        # Only managed runtimes have AWS_EXECUTION_ENV; `provided` leaves it unset, as Lambda does.
        env["AWS_EXECUTION_ENV"] = f"AWS_Lambda_{version}"
        env["PYTHONPATH"] = _joined(
            task, f"{opt}/python/lib/{version}/site-packages", f"{opt}/python"
        )
    env.update(settings.environment)
    return env
