"""What `poller validate` checks beyond the file: what `run` would refuse, or fail a mapping on,
found on this machine without reaching AWS."""

from __future__ import annotations

import pathlib
from collections.abc import Mapping

from poller.aws.clients import AwsClients
from poller.checkpoints import store_problem
from poller.config.rules import Loc
from poller.config.settings import Settings
from poller.wiring import MappingTargetError, load_settings, needs_checkpoint_store, target_for


def check_settings(path: pathlib.Path, environ: Mapping[str, str] | None = None) -> Settings:
    """`load_settings`, with `local_problems` located in the file like the other problems."""
    return load_settings(path, environ, check_settings=local_problems)


def local_problems(settings: Settings) -> list[tuple[Loc, str]]:
    """Each enabled mapping's target is built as `run` builds it (handlers imported, packages
    and a custom runtime's bootstrap checked; nothing connects or starts), and a local
    checkpoint file is checked when a stream mapping needs it."""
    problems: list[tuple[Loc, str]] = []
    clients = AwsClients(settings.aws)
    for index, mapping in enumerate(settings.mappings):
        if not mapping.enabled:
            continue
        try:
            target_for(mapping, clients, settings.tuning)
        except MappingTargetError as exc:
            loc: Loc = ("mappings", index, "target", *exc.key)
            problems.append((loc, f"mapping {mapping.name}: {exc.problem}"))
    problem = store_problem(settings.checkpoints) if needs_checkpoint_store(settings) else None
    if problem is not None:
        problems.append((("checkpoints", "path"), problem))
    return problems
