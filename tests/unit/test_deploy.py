"""The container image and deploy/ material, checked statically (no Docker engine here).

The Dockerfile is parsed and its invariants asserted; every manifest under deploy/ is loaded;
pod templates are checked against the configuration embedded in their ConfigMap, which must
validate with the daemon's own loader; every metric an alert, a dashboard panel or KEDA uses
must be one the daemon exports; the IAM documents must be least-privilege.
"""

from __future__ import annotations

import fnmatch
import json
import pathlib
import re
import shlex
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
DEPLOY = ROOT / "deploy"
KUBERNETES = DEPLOY / "kubernetes"
IAM = DEPLOY / "iam"

CONFIG_KEY = "config.yaml"
CONFIG_PATH = "/etc/poller/config.yaml"
METRICS_PORT = 9102
WORKLOAD_KINDS = ("Deployment", "StatefulSet", "DaemonSet")


# --- Dockerfile ------------------------------------------------------------------------------


def _instructions(text: str) -> list[tuple[str, str]]:
    """(KEYWORD, arguments) per instruction: comments dropped, `\\` continuations joined."""
    instructions: list[tuple[str, str]] = []
    parts: list[str] = []
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue  # blank lines and comments, also inside a continuation
        if line.endswith("\\"):
            parts.append(line[:-1].strip())
            continue
        parts.append(line)
        keyword, _, arguments = " ".join(parts).partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
        parts = []
    assert not parts, "the Dockerfile ends inside a line continuation"
    return instructions


def _flags(arguments: str) -> tuple[dict[str, str], list[str]]:
    """Split `--flag=value` options from the rest of a COPY/ADD/HEALTHCHECK argument string."""
    flags: dict[str, str] = {}
    rest = arguments.split()
    while rest and rest[0].startswith("--"):
        name, _, value = rest.pop(0)[2:].partition("=")
        flags[name] = value
    return flags, rest


def _global_args(instructions: list[tuple[str, str]]) -> dict[str, str]:
    values: dict[str, str] = {}
    for keyword, arguments in instructions:
        if keyword == "FROM":
            break
        if keyword == "ARG":
            name, _, default = arguments.partition("=")
            values[name.strip()] = default.strip().strip('"')
    return values


def _stages() -> list[list[tuple[str, str]]]:
    """The instructions of each stage, its FROM first (global ARGs before the first are dropped)."""
    stages: list[list[tuple[str, str]]] = []
    for instruction in _instructions(DOCKERFILE.read_text(encoding="utf-8")):
        if instruction[0] == "FROM":
            stages.append([])
        if stages:
            stages[-1].append(instruction)
    return stages


def _base_image(from_arguments: str, args: dict[str, str]) -> str:
    _, rest = _flags(from_arguments)
    image = rest[0]
    return re.sub(r"\$\{(\w+)\}|\$(\w+)", lambda m: args.get(m[1] or m[2], m[0]), image)


def _copy_sources(arguments: str) -> tuple[dict[str, str], list[str]]:
    flags, rest = _flags(arguments)
    if rest and rest[0].startswith("["):
        rest = json.loads(" ".join(rest))
    return flags, rest[:-1]


def _ignore_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus `**`) as a regex over slash paths."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        elif pattern[i] == "[":
            end = pattern.index("]", i)
            out, i = out + pattern[i : end + 1], end + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return re.compile(out)


def _ignored(path: str) -> bool:
    """Whether the build context leaves `path` out: the last matching pattern wins, and a
    pattern matching a parent directory matches everything below it (as moby's matcher)."""
    excluded = False
    parents = path.split("/")
    prefixes = ["/".join(parents[: n + 1]) for n in range(len(parents))]
    for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines():
        pattern = line.strip()
        if not pattern or pattern.startswith("#"):
            continue
        negated = pattern.startswith("!")
        regex = _ignore_regex(pattern.lstrip("!").strip("/"))
        if any(regex.fullmatch(prefix) for prefix in prefixes):
            excluded = not negated
    return excluded


def test_dockerfile_is_multi_stage_on_python_311_slim() -> None:
    instructions = _instructions(DOCKERFILE.read_text(encoding="utf-8"))
    args = _global_args(instructions)
    stages = _stages()
    assert len(stages) >= 2, "the image must be multi-stage (a builder and a final stage)"
    for stage in stages:
        assert _base_image(stage[0][1], args).startswith("python:3.11-slim")
    builder_names = {stage[0][1].split()[-1] for stage in stages[:-1]}
    final = stages[-1]
    assert final[0][1].split()[0] not in builder_names, "the final stage must start afresh"
    copies = [arguments for keyword, arguments in final if keyword in ("COPY", "ADD")]
    assert copies, "the final stage must copy the virtualenv from the builder"
    for arguments in copies:
        flags, sources = _copy_sources(arguments)
        assert flags.get("from") in builder_names, f"final stage copies from elsewhere: {arguments}"
        assert sources == ["/opt/venv"], f"the final stage copies only /opt/venv: {arguments}"
    builder_runs = " ".join(a for stage in stages[:-1] for k, a in stage if k == "RUN")
    assert "wheel" in builder_runs and "/opt/venv" in builder_runs


def test_final_stage_runs_as_a_numeric_non_root_user_before_its_entrypoint() -> None:
    final = _stages()[-1]
    keywords = [keyword for keyword, _ in final]
    users = [
        (index, arguments) for index, (keyword, arguments) in enumerate(final) if keyword == "USER"
    ]
    assert users, "the final stage must set USER"
    last_index, last_user = users[-1]
    uid, _, gid = last_user.partition(":")
    assert uid.isdigit() and int(uid) > 0, f"USER must be a numeric non-root UID: {last_user}"
    assert not gid or (gid.isdigit() and int(gid) > 0), f"non-root group expected: {last_user}"
    for entry in ("ENTRYPOINT", "CMD"):
        assert entry in keywords, f"the final stage must set {entry}"
        assert last_index < keywords.index(entry), f"USER must come before {entry}"


def _env(stage: list[tuple[str, str]]) -> dict[str, str]:
    """The stage's ENV variables (`ENV A=1 B="2"` form), the last setting of each winning."""
    values: dict[str, str] = {}
    for keyword, arguments in stage:
        if keyword == "ENV":
            values.update(item.partition("=")[::2] for item in shlex.split(arguments))
    return values


def test_entrypoint_and_cmd_are_exec_form_so_sigterm_reaches_poller() -> None:
    final = dict(_stages()[-1])  # the last of each keyword wins, as in Docker
    entrypoint = json.loads(final["ENTRYPOINT"])
    command = json.loads(final["CMD"])
    assert entrypoint == ["poller"]
    # The configuration comes from POLLER_CONFIG, which the health check reads too.
    assert command == ["run"]
    assert _env(_stages()[-1])["POLLER_CONFIG"] == CONFIG_PATH
    assert all(isinstance(part, str) for part in entrypoint + command)
    assert "SHELL" not in final
    assert final["STOPSIGNAL"] == "SIGTERM"


def test_image_exposes_the_metrics_port_and_checks_healthz() -> None:
    final = _stages()[-1]
    exposed = {port.split("/")[0] for k, a in final if k == "EXPOSE" for port in a.split()}
    assert str(METRICS_PORT) in exposed
    healthchecks = [arguments for keyword, arguments in final if keyword == "HEALTHCHECK"]
    assert len(healthchecks) == 1
    _, rest = _flags(healthchecks[0])
    assert rest[0] == "CMD"
    probe = json.loads(" ".join(rest[1:]))  # exec form too: no shell in the image's probe
    assert probe == ["poller", "healthcheck"]  # the port is the config's: none is written here
    env = _env(final)
    assert env["PYTHONUNBUFFERED"] == "1"
    assert "/opt/venv/bin" in env["PATH"]
    labels = " ".join(arguments for keyword, arguments in final if keyword == "LABEL")
    for key in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{key}=" in labels


_SECRET_SOURCE = re.compile(
    r"(^|/)(\.env(\..*)?|.*\.pem|.*\.key|.*\.p12|credentials(\.\w+)?|\.aws|id_rsa.*|"
    r"\.netrc|\.pypirc|\.docker)(/|$)",
    re.IGNORECASE,
)
_SECRET_NAME = re.compile(r"AWS_SECRET|ACCESS_KEY|SESSION_TOKEN|PASSWORD|SECRET|TOKEN", re.I)


def test_no_secret_is_copied_or_baked_into_the_image() -> None:
    for stage in _stages():
        for keyword, arguments in stage:
            if keyword in ("COPY", "ADD"):
                _, sources = _copy_sources(arguments)
                for source in sources:
                    assert not _SECRET_SOURCE.search(source), f"{keyword} of a secret: {source}"
                    assert source not in (".", "./", "*"), "copy named paths, not the context"
                    assert "://" not in source, f"{keyword} from a URL: {source}"
            if keyword in ("ENV", "ARG"):
                names = re.findall(r"(?:^|\s)([A-Za-z_][A-Za-z0-9_]*)(?==|\s|$)", arguments)
                for name in names:
                    assert not _SECRET_NAME.search(name), f"{keyword} {name} looks like a secret"


def test_no_compiler_or_build_tools_in_the_final_stage() -> None:
    final = _stages()[-1]
    runs = " ".join(arguments for keyword, arguments in final if keyword == "RUN")
    for tool in ("gcc", "g++", "clang", "build-essential", "make", "-dev", "cargo", "rustc"):
        assert not re.search(rf"(^|[\s=]){re.escape(tool)}(\s|$)", runs), f"{tool} in final stage"
    assert not re.search(r"\bpip\b.*\binstall\b", runs), (
        "install in the builder, not the final stage"
    )


def test_dockerignore_keeps_secrets_state_and_caches_out_of_the_context() -> None:
    for path in (
        ".git/config",
        ".venv/bin/python",
        ".env",
        ".env.production",
        "poller/.env",
        "keys/server.pem",
        "tls.key",
        ".aws/credentials",
        "poller-state.db",
        "poller-state.db-wal",
        "var/checkpoints.sqlite3",
        ".pytest_cache/v/cache",
        ".mypy_cache/3.11/x.json",
        ".ruff_cache/x",
        "poller/__pycache__/cli.cpython-311.pyc",
        "tests/unit/test_deploy.py",
        "deploy/iam/sqs-source.json",
    ):
        assert _ignored(path), f".dockerignore lets {path} into the build context"
    for path in ("pyproject.toml", "poller/cli.py", "poller/sources/sqs/source.py"):
        assert not _ignored(path), f".dockerignore drops {path}, which the build needs"


def test_everything_the_dockerfile_copies_is_in_the_build_context() -> None:
    for stage in _stages():
        for keyword, arguments in stage:
            if keyword not in ("COPY", "ADD"):
                continue
            flags, sources = _copy_sources(arguments)
            if "from" in flags:
                continue
            for source in sources:
                assert not any(fnmatch.fnmatch(source, p) for p in ("..*", "/*")), source
                assert (ROOT / source).exists(), f"{keyword} {source}: no such file"
                assert not _ignored(source.strip("/")), f"{source} is excluded by .dockerignore"


# --- manifests -------------------------------------------------------------------------------


def _yaml_files() -> list[pathlib.Path]:
    return sorted(p for p in DEPLOY.rglob("*") if p.suffix in (".yaml", ".yml"))


def _json_files() -> list[pathlib.Path]:
    return sorted(DEPLOY.rglob("*.json"))


def _documents(path: pathlib.Path) -> list[dict[str, Any]]:
    with path.open(encoding="utf-8") as handle:
        return [doc for doc in yaml.safe_load_all(handle) if doc is not None]


def _all_documents() -> Iterator[tuple[pathlib.Path, dict[str, Any]]]:
    for path in _yaml_files():
        for doc in _documents(path):
            yield path, doc


def _of_kind(kind: str, directory: pathlib.Path = DEPLOY) -> list[dict[str, Any]]:
    return [
        doc
        for path, doc in _all_documents()
        if doc.get("kind") == kind and directory in path.parents
    ]


def _workloads() -> list[tuple[pathlib.Path, dict[str, Any]]]:
    return [(path, doc) for path, doc in _all_documents() if doc.get("kind") in WORKLOAD_KINDS]


def _workload_id(item: tuple[pathlib.Path, dict[str, Any]]) -> str:
    path, doc = item
    return f"{path.relative_to(DEPLOY)}:{doc['metadata']['name']}"


def _config_text(directory: pathlib.Path, pod: dict[str, Any]) -> str:
    """The embedded poller config of the ConfigMap the pod mounts, from the same directory."""
    names = [v["configMap"]["name"] for v in pod.get("volumes", []) if "configMap" in v]
    assert len(names) == 1, "the pod mounts exactly one ConfigMap (the poller config)"
    maps = [m for m in _of_kind("ConfigMap", directory) if m["metadata"]["name"] == names[0]]
    assert len(maps) == 1, f"ConfigMap {names[0]} is not defined beside the workload"
    text: str = maps[0]["data"][CONFIG_KEY]
    return text


def _configs() -> list[tuple[pathlib.Path, str]]:
    return [
        (path, doc["data"][CONFIG_KEY])
        for path, doc in _all_documents()
        if doc.get("kind") == "ConfigMap" and CONFIG_KEY in doc.get("data", {})
    ]


def test_every_manifest_and_json_document_loads() -> None:
    yaml_files, json_files = _yaml_files(), _json_files()
    assert len(yaml_files) >= 15 and len(json_files) >= 10
    for path in yaml_files:
        documents = _documents(path)
        assert documents, f"{path} holds no document"
        for doc in documents:
            assert isinstance(doc, dict), f"{path}: a document is not a mapping"
            assert doc.get("apiVersion") and doc.get("kind"), f"{path}: apiVersion and kind"
            if doc["kind"] != "Kustomization":
                assert doc.get("metadata", {}).get("name"), f"{path}: metadata.name"
    for path in json_files:
        with path.open(encoding="utf-8") as handle:
            assert isinstance(json.load(handle), dict), path


def test_both_shapes_are_present() -> None:
    single = _of_kind("StatefulSet", KUBERNETES / "single")
    fleet = _of_kind("Deployment", KUBERNETES / "fleet")
    assert len(single) == 1 and single[0]["spec"]["replicas"] == 1
    assert single[0]["spec"].get("volumeClaimTemplates")
    assert len(fleet) == 1 and fleet[0]["spec"]["replicas"] == 3
    assert not _of_kind("Deployment", KUBERNETES / "single")
    for shape in ("single", "fleet"):
        directory = KUBERNETES / shape
        for kind in ("ConfigMap", "Service", "PodDisruptionBudget", "ServiceAccount"):
            assert _of_kind(kind, directory), f"{shape}: no {kind}"
        kustomization = _of_kind("Kustomization", directory)
        assert len(kustomization) == 1
        for resource in kustomization[0]["resources"]:
            assert (directory / resource).is_file(), f"{shape}/kustomization: {resource}"
    fleet_pdb = _of_kind("PodDisruptionBudget", KUBERNETES / "fleet")
    assert fleet_pdb[0]["spec"]["maxUnavailable"] == 1


def test_every_deploy_file_is_explained_in_the_readme() -> None:
    readme = (DEPLOY / "README.md").read_text(encoding="utf-8")
    for path in DEPLOY.rglob("*"):
        if path.is_file() and path.name != "README.md":
            assert path.name in readme, f"deploy/README.md does not mention {path.name}"


@pytest.mark.parametrize("item", _workloads(), ids=_workload_id)
def test_pod_template_drains_probes_and_runs_non_root(
    item: tuple[pathlib.Path, dict[str, Any]],
) -> None:
    path, workload = item
    template = workload["spec"]["template"]
    pod = template["spec"]
    config = yaml.safe_load(_config_text(path.parent, pod))
    shutdown = config.get("shutdown_timeout_seconds", 30)
    port = config.get("server", {}).get("port", METRICS_PORT)
    assert port == METRICS_PORT
    grace = pod["terminationGracePeriodSeconds"]
    assert grace > shutdown, f"terminationGracePeriodSeconds {grace} <= shutdown {shutdown}"

    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert annotations["prometheus.io/port"] == str(METRICS_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"

    pod_security = pod.get("securityContext", {})
    assert pod.get("volumes"), "no volumes"
    config_volumes = {v["name"] for v in pod["volumes"] if "configMap" in v}
    for container in pod["containers"]:
        security = {**pod_security, **container.get("securityContext", {})}
        assert security.get("runAsNonRoot") is True
        assert security.get("runAsUser", 1) != 0 and security.get("runAsGroup", 1) != 0
        assert container["securityContext"]["readOnlyRootFilesystem"] is True
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert "ALL" in container["securityContext"]["capabilities"]["drop"]

        ports = {p["name"]: p["containerPort"] for p in container["ports"]}
        assert ports.get("metrics") == METRICS_PORT
        for probe, endpoint in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            http = container[probe]["httpGet"]
            assert http["path"] == endpoint
            assert http["port"] in ("metrics", METRICS_PORT)

        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), kind

        assert CONFIG_PATH in container.get("args", []) or "command" not in container
        mounts = {m["mountPath"]: m for m in container["volumeMounts"]}
        config_mount = mounts[str(pathlib.PurePosixPath(CONFIG_PATH).parent)]
        assert config_mount["name"] in config_volumes and config_mount.get("readOnly") is True
        assert "/tmp" in mounts, "a writable /tmp beside the read-only root filesystem"


@pytest.mark.parametrize("item", _workloads(), ids=_workload_id)
def test_checkpoints_live_where_the_shape_needs_them(
    item: tuple[pathlib.Path, dict[str, Any]],
) -> None:
    path, workload = item
    pod = workload["spec"]["template"]["spec"]
    checkpoints = yaml.safe_load(_config_text(path.parent, pod)).get("checkpoints", {})
    if workload["kind"] == "StatefulSet":
        assert workload["spec"]["replicas"] == 1, "sqlite checkpoints allow one replica"
        assert checkpoints.get("backend", "sqlite") == "sqlite"
        claims = {claim["metadata"]["name"] for claim in workload["spec"]["volumeClaimTemplates"]}
        (container,) = pod["containers"]
        on_claims = [m["mountPath"] for m in container["volumeMounts"] if m["name"] in claims]
        state = pathlib.PurePosixPath(checkpoints["path"])
        assert state.is_absolute()
        assert any(pathlib.PurePosixPath(m) in state.parents for m in on_claims), (
            f"checkpoints.path {state} is not on a persistent volume ({on_claims})"
        )
        assert pod["securityContext"].get("fsGroup"), "the volume must be writable by the user"
    else:
        assert checkpoints["backend"] == "dynamodb" and checkpoints["table"]


@pytest.mark.parametrize("item", _workloads(), ids=_workload_id)
def test_services_budgets_and_accounts_match_the_pods(
    item: tuple[pathlib.Path, dict[str, Any]],
) -> None:
    path, workload = item
    directory = path.parent
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    services = _of_kind("Service", directory)
    assert any(s["spec"]["selector"].items() <= labels.items() for s in services)
    for service in services:
        (port,) = service["spec"]["ports"]
        assert port["name"] == "metrics" and port["port"] == METRICS_PORT
        assert port["targetPort"] in ("metrics", METRICS_PORT)
    budgets = _of_kind("PodDisruptionBudget", directory)
    assert any(b["spec"]["selector"]["matchLabels"].items() <= labels.items() for b in budgets)
    accounts = {a["metadata"]["name"]: a for a in _of_kind("ServiceAccount", directory)}
    account = accounts[workload["spec"]["template"]["spec"]["serviceAccountName"]]
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"].startswith(
        "arn:aws:iam::"
    )
    if workload["kind"] == "StatefulSet":
        assert workload["spec"]["serviceName"] in {s["metadata"]["name"] for s in services}


def test_embedded_configs_validate_with_the_daemon_loader() -> None:
    from poller.wiring import parse_settings

    configs = _configs()
    assert len(configs) >= 2
    for path, text in configs:
        settings = parse_settings(text, "configmap", environ={})
        assert settings.enabled_mappings, f"{path}: no enabled mapping"
        assert settings.server.port == METRICS_PORT


def test_service_monitor_scrapes_the_metrics_port_of_every_shape() -> None:
    (monitor,) = _of_kind("ServiceMonitor")
    selector = monitor["spec"]["selector"]["matchLabels"]
    endpoints = monitor["spec"]["endpoints"]
    assert [e["port"] for e in endpoints] == ["metrics"]
    assert endpoints[0].get("path", "/metrics") == "/metrics"
    services = _of_kind("Service", KUBERNETES)
    assert services
    for service in services:
        assert selector.items() <= service["metadata"]["labels"].items()


# --- metrics used by alerts, KEDA and the dashboard ------------------------------------------

_METRIC = re.compile(r"poller_[a-z_]+")
_SUFFIX = re.compile(r"_(bucket|sum|count)$")
_SELECTOR = re.compile(r"(poller_[a-z_]+)\{([^}]*)\}")
_LABEL_MATCHER = re.compile(r'\b(outcome|stage|state|operation)\s*(?:=~|!~|!=|=)\s*"([^"]*)"')


def _exported_metric_names() -> set[str]:
    from poller.ops.metrics import Metrics

    names: set[str] = set()
    for family in Metrics().registry.collect():
        names.add(family.name)
        if family.type == "counter":
            names.add(family.name + "_total")
        names.update(sample.name for sample in family.samples)
    return names


def _alert_rules() -> list[dict[str, Any]]:
    rules: list[dict[str, Any]] = []
    for rule_doc in _of_kind("PrometheusRule"):
        for group in rule_doc["spec"]["groups"]:
            rules.extend(group["rules"])
    return rules


def _keda_queries() -> list[str]:
    return [
        trigger["metadata"]["query"]
        for scaled in _of_kind("ScaledObject")
        for trigger in scaled["spec"]["triggers"]
        if trigger["type"] == "prometheus"
    ]


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


def _dashboards() -> list[dict[str, Any]]:
    dashboards = []
    for path in sorted((DEPLOY / "grafana").glob("*.json")):
        with path.open(encoding="utf-8") as handle:
            dashboards.append(json.load(handle))
    return dashboards


def _dashboard_queries() -> list[str]:
    queries: list[str] = []
    for dashboard in _dashboards():
        for panel in _panels(dashboard["panels"]):
            queries.extend(target["expr"] for target in panel.get("targets", []))
        for variable in dashboard.get("templating", {}).get("list", []):
            query = variable.get("query")
            if variable.get("type") == "query":
                queries.append(query["query"] if isinstance(query, dict) else query)
    return queries


def _used(queries: list[str]) -> set[str]:
    return {_SUFFIX.sub("", name) for query in queries for name in _METRIC.findall(query)}


def _unexported(names: set[str], exported: set[str]) -> set[str]:
    return {name for name in names if name not in exported}


def test_every_metric_used_by_alerts_keda_and_the_dashboard_is_exported() -> None:
    exported = _exported_metric_names()
    assert "poller_invocations_total" in exported and "poller_mapping_up" in exported
    sources = {
        "alerts": [rule["expr"] for rule in _alert_rules()],
        "keda": _keda_queries(),
        "grafana": _dashboard_queries(),
    }
    for source, queries in sources.items():
        used = _used(queries)
        assert used, f"{source}: no poller metric found"
        assert not _unexported(used, exported), f"{source} uses {_unexported(used, exported)}"


def test_label_values_in_queries_are_ones_the_daemon_sets() -> None:
    from poller.aws.calls import OPERATIONS_BY_SOURCE
    from poller.ops.metrics import BACKLOG_STATES, STAGES
    from poller.ops.status import State
    from poller.targets.base import Outcome

    allowed = {
        ("poller_invocations_total", "outcome"): {outcome.value for outcome in Outcome},
        ("poller_events_total", "stage"): set(STAGES),
        ("poller_source_backlog_messages", "state"): set(BACKLOG_STATES),
        ("poller_mapping_state", "state"): {state.value for state in State},
        ("poller_source_errors_total", "operation"): {
            operation for operations in OPERATIONS_BY_SOURCE.values() for operation in operations
        },
    }
    queries = [rule["expr"] for rule in _alert_rules()] + _keda_queries() + _dashboard_queries()
    checked = set()
    for query in queries:
        for metric, matchers in _SELECTOR.findall(query):
            for label, values in _LABEL_MATCHER.findall(matchers):
                assert (metric, label) in allowed, f"{metric} has no label {label}: {query}"
                for value in values.split("|"):
                    assert value in allowed[metric, label], f"{label}={value!r} in {query}"
                checked.add((metric, label))
    assert ("poller_mapping_state", "state") in checked


def test_dashboard_covers_the_spec_metrics() -> None:
    (dashboard,) = _dashboards()
    assert dashboard["uid"] and dashboard["title"]
    used = _used(_dashboard_queries())
    for name in (
        "poller_invocations_total",
        "poller_invocation_duration_seconds",
        "poller_events_total",
        "poller_iterator_age_seconds",
        "poller_concurrent_executions",
        "poller_source_backlog_messages",
        "poller_mapping_up",
        "poller_mapping_state",
        "poller_source_errors_total",
        "poller_leases_owned",
    ):
        assert name in used, f"no dashboard panel shows {name}"
    for panel in _panels(dashboard["panels"]):
        if panel["type"] != "row":
            assert panel.get("targets") and panel.get("datasource"), panel["title"]


def test_alerts_cover_the_failure_modes_and_say_what_to_do() -> None:
    rules = _alert_rules()
    exprs = " ".join(rule["expr"] for rule in rules)
    assert "poller_iterator_age_seconds" in exprs
    assert re.search(r'outcome=~"function_error\|timeout"', exprs)
    assert 'outcome="throttled"' in exprs
    assert "poller_on_failure_delivery_errors_total" in exprs
    assert re.search(r"poller_mapping_up\s*==\s*0", exprs)
    assert 'poller_mapping_state{state=~"degraded|failed"}' in exprs
    assert "poller_source_errors_total" in exprs
    for rule in rules:
        assert rule["alert"] and rule["labels"]["severity"] in ("warning", "critical")
        for key in ("summary", "description", "runbook"):
            assert rule["annotations"].get(key, "").strip(), f"{rule['alert']}: no {key}"


def test_promtool_tests_cover_each_tested_alert_where_it_fires_and_where_it_does_not() -> None:
    with (ROOT / "tests" / "alerts" / "alerts-test.yaml").open(encoding="utf-8") as handle:
        tests = yaml.safe_load(handle)
    assert tests["rule_files"] == ["alerts.rules.yaml"]  # as tests/alerts/__main__.py writes it
    names = {rule["alert"] for rule in _alert_rules()}
    fires: set[str] = set()
    stays_quiet: set[str] = set()
    for case in tests["tests"]:
        for check in case["alert_rule_test"]:
            assert check["alertname"] in names, check["alertname"]
            (fires if check["exp_alerts"] else stays_quiet).add(check["alertname"])
    for alert in ("PollerMappingUnhealthy", "PollerSourceErrors"):
        assert alert in fires and alert in stays_quiet, alert


def test_keda_scales_the_fleet_on_visible_plus_in_flight_backlog() -> None:
    scaled_objects = _of_kind("ScaledObject")
    assert scaled_objects and not _of_kind("ScaledObject", KUBERNETES / "single")
    fleet = {d["metadata"]["name"] for d in _of_kind("Deployment", KUBERNETES / "fleet")}
    for scaled in scaled_objects:
        target = scaled["spec"]["scaleTargetRef"]
        assert target.get("kind", "Deployment") == "Deployment" and target["name"] in fleet
        assert scaled["spec"]["minReplicaCount"] >= 1, "the pods are the metrics' source"
        queries = [t["metadata"]["query"] for t in scaled["spec"]["triggers"]]
        backlog = [q for q in queries if "poller_source_backlog_messages" in q]
        assert backlog and all("visible" in q and "in_flight" in q for q in backlog)
        assert any("poller_iterator_age_seconds" in q for q in queries)


# --- IAM ---------------------------------------------------------------------------------------

_EXPECTED_ACTIONS = {
    "sqs-source.json": {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "sqs:GetQueueUrl",
    },
    "kinesis-source.json": {
        "kinesis:GetRecords",
        "kinesis:GetShardIterator",
        "kinesis:DescribeStream",
        "kinesis:DescribeStreamSummary",
        "kinesis:ListShards",
        "sts:GetCallerIdentity",
    },
    "dynamodb-streams-source.json": {
        "dynamodb:GetRecords",
        "dynamodb:GetShardIterator",
        "dynamodb:DescribeStream",
        "dynamodb:ListStreams",
        "sts:GetCallerIdentity",
    },
    "lambda-target.json": {"lambda:InvokeFunction"},
    "destination-sqs.json": {"sqs:SendMessage", "sqs:GetQueueUrl"},
    "destination-sns.json": {"sns:Publish"},
    "destination-s3.json": {"s3:PutObject", "s3:ListBucket"},
    "kms-customer-key.json": {"kms:Decrypt", "kms:GenerateDataKey"},
    "lease-table.json": {
        "dynamodb:CreateTable",
        "dynamodb:DescribeTable",
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
    },
}
_ONLY_ON_ANY_RESOURCE = {"sts:GetCallerIdentity"}


def _as_list(value: str | list[str]) -> list[str]:
    return [value] if isinstance(value, str) else list(value)


@pytest.mark.parametrize("name", sorted(_EXPECTED_ACTIONS))
def test_iam_policy_is_least_privilege(name: str) -> None:
    text = (IAM / name).read_text(encoding="utf-8")
    policy = json.loads(text)
    assert policy["Version"] == "2012-10-17"
    statements = policy["Statement"]
    assert isinstance(statements, list) and statements
    actions: set[str] = set()
    for statement in statements:
        assert statement["Effect"] == "Allow"
        assert "NotAction" not in statement and "NotResource" not in statement
        assert "Principal" not in statement, "an identity policy names no principal"
        these = _as_list(statement["Action"])
        resources = _as_list(statement["Resource"])
        for action in these:
            assert "*" not in action, f"{name}: wildcard action {action}"
        if "*" in resources:
            assert set(these) <= _ONLY_ON_ANY_RESOURCE, f"{name}: Resource * for {these}"
        else:
            for resource in resources:
                assert resource.startswith("arn:aws:"), f"{name}: {resource}"
                assert "NAME" in resource or "KEY_ID" in resource or "poller-leases" in resource
        actions.update(these)
    assert actions == _EXPECTED_ACTIONS[name]


def test_iam_directory_holds_exactly_the_documented_policies() -> None:
    assert {path.name for path in IAM.glob("*.json")} == set(_EXPECTED_ACTIONS)


@pytest.mark.parametrize("name", sorted(_EXPECTED_ACTIONS))
def test_iam_policy_passes_an_iam_grammar_check(name: str) -> None:
    validation = pytest.importorskip("moto.iam.policy_validation")
    validation.IAMPolicyDocumentValidator((IAM / name).read_text(encoding="utf-8")).validate()
