"""What a reloaded configuration changes against the running one, mapping by mapping.

Mappings are compared by name, after defaults and `${VAR}` expansion (both files are
validated settings by then): a renamed mapping is one removed and one added. Everything
outside `mappings` is read once at start-up; a change there is named so that the daemon can
say it needs a restart.
"""

from __future__ import annotations

from dataclasses import dataclass

from poller.config.settings import MappingSettings, Settings


@dataclass(frozen=True)
class Changes:
    """The mappings of the new file, sorted by what a reload does with each."""

    added: tuple[MappingSettings, ...]
    removed: tuple[MappingSettings, ...]
    changed: tuple[MappingSettings, ...]  # the new settings of each changed mapping
    unchanged: tuple[MappingSettings, ...]
    # Top-level keys outside `mappings` whose value differs (`aws`, `tuning`, ...).
    needs_restart: tuple[str, ...]

    @property
    def touches_mappings(self) -> bool:
        return bool(self.added or self.removed or self.changed)


def changes(running: Settings, loaded: Settings) -> Changes:
    """How `loaded` differs from `running`."""
    before = {mapping.name: mapping for mapping in running.mappings}
    after = {mapping.name: mapping for mapping in loaded.mappings}
    added = tuple(m for name, m in after.items() if name not in before)
    removed = tuple(m for name, m in before.items() if name not in after)
    kept = [m for name, m in after.items() if name in before]
    changed = tuple(m for m in kept if not _same(before[m.name], m))
    unchanged = tuple(m for m in kept if _same(before[m.name], m))
    running_keys, loaded_keys = running.model_dump(), loaded.model_dump()
    needs_restart = tuple(
        key
        for key in Settings.model_fields
        if key != "mappings" and running_keys[key] != loaded_keys[key]
    )
    return Changes(added, removed, changed, unchanged, needs_restart)


def _same(running: MappingSettings, loaded: MappingSettings) -> bool:
    # Every key, with its default filled in: a key written out at its default value is no change.
    return running.model_dump() == loaded.model_dump()
