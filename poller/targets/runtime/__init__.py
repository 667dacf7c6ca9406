"""The `runtime` target: unchanged Lambda packages behind an embedded Runtime API."""
