"""YAML configuration → `Settings`, or a `ConfigError` carrying every problem found, each
located as `FILE:LINE: PATH: message`. `poller.config.reader` turns the text into plain values
with line numbers; the models validate their fields; rules that depend on the source kind run
once a mapping is built; checks the caller passes in run last."""

from __future__ import annotations

import os
import pathlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pydantic import ValidationError

from poller.config import rules
from poller.config.reader import ConfigError, ConfigProblem, Reader, check_names
from poller.config.rules import Loc
from poller.config.settings import CheckpointSettings, MappingSettings, Settings

SettingsCheck = Callable[[Settings], Iterable[tuple[Loc, str]]]
"""A check of valid settings against the machine they will run on: (path, problem) pairs."""


def load_config(
    path: pathlib.Path,
    environ: Mapping[str, str] | None = None,
    *,
    check_pattern: rules.PatternCheck | None = None,
    check_settings: SettingsCheck | None = None,
) -> Settings:
    """Read and validate a configuration file; raise ConfigError listing every problem.

    `check_pattern` is the filter engine's check of a FilterCriteria pattern; without it only a
    pattern's shape is checked (the filter engine compiles it again when the mapping starts).
    `check_settings` runs once the settings are valid; its problems are located like the rest.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError([ConfigProblem(str(path), None, "", f"not UTF-8 text: {exc}")]) from None
    except OSError as exc:
        message = f"cannot read the file: {exc.strerror or exc}"
        raise ConfigError([ConfigProblem(str(path), None, "", message)]) from None
    return parse_config(
        text, str(path), environ, check_pattern=check_pattern, check_settings=check_settings
    )


def parse_config(
    text: str,
    filename: str,
    environ: Mapping[str, str] | None = None,
    *,
    check_pattern: rules.PatternCheck | None = None,
    check_settings: SettingsCheck | None = None,
) -> Settings:
    """Validate configuration text (`filename` only labels problems); raise ConfigError.

    `check_pattern` and `check_settings` as for `load_config`.
    """
    reader = Reader(filename, os.environ if environ is None else environ)
    context = {rules.CHECK_PATTERN: check_pattern}
    raw = reader.read(text)
    mappings = raw.get("mappings")
    if isinstance(mappings, list):
        for index, item in enumerate(mappings):
            _check_mapping(item, ("mappings", index), reader, context)
        # An empty list is valid: a daemon serves its endpoints with no mapping, and a reload
        # that removes the last one drains and stops it, as it does any removed mapping.
        check_names(mappings, reader)
        raw = {**raw, "mappings": []}  # checked above, one by one
    try:
        Settings.model_validate(raw, context=context)
    except ValidationError as exc:
        reader.add_pydantic(exc, Settings, ())
    try:
        checkpoints = CheckpointSettings.model_validate(raw.get("checkpoints", {}))
    except ValidationError:
        pass  # reported with the rest of Settings
    else:
        for loc, message in rules.check_checkpoints(checkpoints):
            reader.add(("checkpoints", *loc), message)
    if reader.problems:
        raise ConfigError(reader.problems)
    try:
        settings = Settings.model_validate(reader.data, context=context)
    except ValidationError as exc:  # not expected once every part passed on its own
        reader.add_pydantic(exc, Settings, ())
        raise ConfigError(reader.problems) from None
    for loc, message in check_settings(settings) if check_settings is not None else ():
        reader.add(loc, message)
    if reader.problems:
        raise ConfigError(reader.problems)
    return settings


# Stands in for a mapping's invalid name or target, so its other keys can still be checked.
_PLACEHOLDERS = {"name": "placeholder", "target": {"type": "python", "handler": "m:f"}}


def _check_mapping(item: Any, prefix: Loc, reader: Reader, context: dict[str, Any]) -> None:
    """Validate one mapping, then its kind-specific rules, reporting everything found.

    When some keys are invalid, the rules still run on the rest, so one typo does not hide the
    other problems of the same mapping (only an invalid `source` leaves the kind unknown).
    """
    try:
        mapping = MappingSettings.model_validate(item, context=context)
        invalid: set[str | int] = set()
    except ValidationError as exc:
        reader.add_pydantic(exc, MappingSettings, prefix)
        invalid = {error["loc"][0] for error in exc.errors() if error["loc"]}
        if not isinstance(item, dict) or "source" in invalid:
            return
        rest = {key: value for key, value in item.items() if key not in invalid}
        try:
            mapping = MappingSettings.model_validate(
                {**{k: v for k, v in _PLACEHOLDERS.items() if k not in rest}, **rest},
                context=context,
            )
        except ValidationError:
            return
    for loc, message in rules.check_mapping(mapping, context[rules.CHECK_PATTERN]):
        if loc[0] not in invalid:
            reader.add(prefix + loc, message)
