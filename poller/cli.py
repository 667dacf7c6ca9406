"""The `poller` command: parse the arguments, load the configuration, hand over to the app.

Each command's work lives in its own module; this one only maps commands to them and
configuration problems to exit code 2.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio

from poller import __version__
from poller.config.reader import ConfigError
from poller.config.settings import Settings
from poller.ops import healthcheck as health
from poller.wiring import load_settings

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_USAGE = 2

log = logging.getLogger("poller.cli")

DESCRIPTION = (
    "Lambda's event source mappings (SQS, Kinesis, DynamoDB Streams) for functions outside "
    "Lambda: reads the sources, batches records into Lambda's events, invokes the target "
    "and settles the outcome with Lambda's rules."
)
EPILOG = (
    "Exit codes: 0 success, 1 runtime failure, 2 bad configuration or usage. "
    "`poller COMMAND --help` shows a command's options."
)


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        self.print_usage(sys.stderr)
        sys.stderr.write(f"poller: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="poller", description=DESCRIPTION, epilog=EPILOG)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    def config_option(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "-c",
            "--config",
            default=os.environ.get("POLLER_CONFIG"),
            help="the YAML configuration (default: $POLLER_CONFIG)",
        )

    def log_options(sub: argparse.ArgumentParser, format_default: str) -> None:
        sub.add_argument(
            "--log-level",
            default="INFO",
            type=str.upper,
            choices=["DEBUG", "INFO", "WARNING", "ERROR"],
            help="the least severe level poller logs (default: %(default)s)",
        )
        sub.add_argument(
            "--log-format",
            choices=["json", "text"],
            default=None,
            help=f"json: one JSON object per line; text: for reading (default: {format_default})",
        )

    def daemon_options(sub: argparse.ArgumentParser) -> None:
        config_option(sub)
        sub.add_argument(
            "--url",
            help="the daemon's address, instead of the configuration's server "
            f"(without either: {health.DEFAULT_URL})",
        )
        sub.add_argument(
            "--timeout", type=float, default=4.0, metavar="S", help="seconds to wait (default: 4)"
        )

    run = commands.add_parser("run", help="run every enabled mapping until SIGTERM/SIGINT")
    config_option(run)
    log_options(run, "text when stdout is a terminal, json otherwise")
    validate = commands.add_parser("validate", help="check a configuration and exit")
    config_option(validate)
    demo = commands.add_parser("demo", help="run against an embedded local AWS emulator")
    demo.add_argument(
        "--duration", type=float, default=None, metavar="S", help="stop after S seconds"
    )
    log_options(demo, "json, in the log file the demo names")
    check = commands.add_parser(
        "healthcheck",
        help="exit 0 when the daemon of the configuration answers /healthz, else 1",
    )
    daemon_options(check)
    status = commands.add_parser(
        "status", help="show a running daemon's mappings and shards (its /status)"
    )
    daemon_options(status)
    status.add_argument(
        "--json", action="store_true", help="print the /status document as it is (indented)"
    )
    from poller.ops.commands.arguments import checkpoints_parser, stream_commands_parsers

    checkpoints_parser(commands, config_option)
    stream_commands_parsers(commands, config_option)
    return parser


def _load(path_text: str | None, load: Callable[[Path], Settings] = load_settings) -> Settings:
    if not path_text:
        raise ConfigError.single(
            "<none>", "config", "no configuration: pass -c FILE or set POLLER_CONFIG"
        )
    return load(Path(path_text))


def _settings(
    path_text: str | None, load: Callable[[Path], Settings] = load_settings
) -> Settings | None:
    """`_load`, with every problem written to stderr instead: None when there were some."""
    try:
        return _load(path_text, load)
    except ConfigError as error:
        _report(error)
        return None


def _handlers_from_cwd() -> None:
    # A python target's `module:function` resolves from the working directory, as `python -m`
    # and uvicorn do, so `handler: app.handlers:handle` works without installing the app.
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())


def _report(error: ConfigError) -> None:
    for problem in error.problems:
        sys.stderr.write(problem.format() + "\n")


def validate(args: argparse.Namespace) -> int:
    from poller.ops.preflight import check_settings

    # Targets are built as `run` builds them: handlers import from where `run` would find them.
    _handlers_from_cwd()
    settings = _settings(args.config, check_settings)
    if settings is None:
        return EXIT_USAGE
    count = len(settings.mappings)
    sys.stdout.write(f"ok: {count} mapping{'s' if count != 1 else ''}\n")
    return EXIT_OK


def run(args: argparse.Namespace) -> int:
    from poller.app import App
    from poller.ops.logs import configure_logging

    # Until the daemon listens for it, a SIGHUP (a reload asked for early) must not end the
    # process, as its default action would: the file is about to be read anyway.
    signal.signal(signal.SIGHUP, signal.SIG_IGN)
    settings = _settings(args.config)
    if settings is None:
        return EXIT_USAGE
    configure_logging(args.log_level, args.log_format)
    _handlers_from_cwd()
    app = App(settings, config_path=Path(args.config))
    try:
        app.build_targets()
    except ValueError as exc:
        sys.stderr.write(f"{args.config}: {exc}\n")
        return EXIT_USAGE
    try:
        return anyio.run(app.run)
    except OSError as exc:
        # E.g. the ops port is taken: a user's environment problem, said plainly.
        log.error("cannot start: %s", exc)
        return EXIT_FATAL


def demo(args: argparse.Namespace) -> int:
    try:
        from poller.demo.environment import run_demo
    except ImportError as exc:
        from poller.demo.install import install_hint

        sys.stderr.write(f"poller demo needs the demo extra ({install_hint()}): {exc}\n")
        return EXIT_USAGE
    return run_demo(duration=args.duration, log_level=args.log_level, log_format=args.log_format)


def _daemon_url(args: argparse.Namespace) -> str | None:
    """Where the daemon's endpoints are: `--url`, else the configuration's server, else the
    default; None (the problem reported) when the configuration does not say."""
    if args.url is not None or not args.config:
        return str(args.url or health.DEFAULT_URL)
    try:
        return health.ops_url(_load(args.config).server)
    except ConfigError as error:
        _report(error)
    except ValueError as exc:
        sys.stderr.write(f"{args.config}: {exc}\n")
    return None


def healthcheck(args: argparse.Namespace) -> int:
    # Every failure is 1, a bad configuration too: Docker reserves a health check's exit code 2.
    url = _daemon_url(args)
    if url is None:
        return EXIT_FATAL
    problem = health.probe(url, args.timeout)
    if problem:
        sys.stderr.write(f"poller healthcheck: unhealthy: {problem}\n")
        return EXIT_FATAL
    sys.stdout.write(f"ok: {url.rstrip('/')}/healthz\n")
    return EXIT_OK


def status(args: argparse.Namespace) -> int:
    from poller.ops.commands.status import Unreachable, fetch, render

    url = _daemon_url(args)
    if url is None:
        return EXIT_USAGE
    try:
        document = fetch(url, args.timeout)
    except Unreachable as exc:
        sys.stderr.write(f"poller status: {exc}\n")
        return EXIT_FATAL
    sys.stdout.write(json.dumps(document, indent=2) + "\n" if args.json else render(document))
    return EXIT_OK


def checkpoints(args: argparse.Namespace) -> int:
    from poller.ops.commands.checkpoints import run_command

    settings = _settings(args.config)
    if settings is None:
        return EXIT_USAGE
    return run_command(settings, args)


def replay(args: argparse.Namespace) -> int:
    from poller.ops.commands.replay import run_command

    settings = _settings(args.config)
    if settings is None:
        return EXIT_USAGE
    _handlers_from_cwd()
    return run_command(settings, args)


def redrive(args: argparse.Namespace) -> int:
    from poller.ops.commands.redrive import run_command

    settings = _settings(args.config)
    if settings is None:
        return EXIT_USAGE
    _handlers_from_cwd()
    return run_command(settings, args)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    handlers: dict[str, Callable[[argparse.Namespace], int]] = {
        "run": run,
        "validate": validate,
        "demo": demo,
        "healthcheck": healthcheck,
        "status": status,
        "checkpoints": checkpoints,
        "replay": replay,
        "redrive": redrive,
    }
    return handlers[args.command](args)


def entry() -> None:
    raise SystemExit(main())
