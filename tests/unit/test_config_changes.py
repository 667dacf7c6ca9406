"""What a reload sees as changed: mappings by name after defaults and `${VAR}` expansion, and
the keys outside `mappings` that only a restart applies."""

from __future__ import annotations

from poller.config.changes import changes
from poller.config.settings import Settings
from poller.wiring import parse_settings

QUEUE = "arn:aws:sqs:us-east-1:123456789012:"


def settings(*mappings: str, head: str = "", environ: dict[str, str] | None = None) -> Settings:
    body = "".join(
        f"  - name: {name}\n    source: {QUEUE}{name}\n    target: {{type: lambda, function: f}}\n"
        + "".join(f"    {key}\n" for key in keys.split(";") if key)
        for name, _, keys in (m.partition("|") for m in mappings)
    )
    return parse_settings(f"{head}mappings:\n{body}", "poller.yaml", environ or {})


def names(mappings: tuple[object, ...]) -> list[str]:
    return [m.name for m in mappings]  # type: ignore[attr-defined]


def test_added_removed_changed_and_unchanged_are_told_apart() -> None:
    before = settings("keep", "drop", "tune|batch_size: 10")
    after = settings("keep", "tune|batch_size: 5", "new")
    found = changes(before, after)
    assert names(found.added) == ["new"]
    assert names(found.removed) == ["drop"]
    assert names(found.changed) == ["tune"]
    assert found.changed[0].batch_size == 5  # the new settings
    assert names(found.unchanged) == ["keep"]
    assert found.needs_restart == ()
    assert found.touches_mappings


def test_a_key_written_at_its_default_is_no_change() -> None:
    found = changes(settings("q"), settings("q|batch_size: 10;enabled: true"))
    assert names(found.unchanged) == ["q"]
    assert not found.touches_mappings


def test_values_are_compared_after_variable_expansion() -> None:
    before = settings("q|batch_size: ${SIZE}", environ={"SIZE": "10"})
    same = settings("q|batch_size: 10")
    other = settings("q|batch_size: ${SIZE}", environ={"SIZE": "7"})
    assert names(changes(before, same).unchanged) == ["q"]
    assert names(changes(before, other).changed) == ["q"]


def test_a_rename_is_a_removal_and_an_addition() -> None:
    found = changes(settings("orders"), settings("orders-v2"))
    assert (names(found.removed), names(found.added), found.changed) == (
        ["orders"],
        ["orders-v2"],
        (),
    )


def test_pausing_a_mapping_is_a_change() -> None:
    found = changes(settings("q"), settings("q|enabled: false"))
    assert names(found.changed) == ["q"]
    assert found.changed[0].enabled is False


def test_keys_outside_mappings_are_named_as_needing_a_restart() -> None:
    before = settings("q")
    after = settings("q", head="tuning: {backlog_refresh_interval_seconds: 7}\nserver: {port: 9}\n")
    found = changes(before, after)
    assert found.needs_restart == ("server", "tuning")
    assert not found.touches_mappings
