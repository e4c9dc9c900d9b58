"""deploy/ stays true to the service: every metric the dashboard and the alert rules use is one /metrics exports,
and the Kubernetes manifests probe routes that exist, with a grace period longer than the drain.

The tools check the rest in CI (.ci/run): `promtool check rules` / `promtool test rules`, `kubernetes-validate`.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from tests.test_project_files import variables_the_service_reads

DEPLOY = Path(__file__).resolve().parent.parent / "deploy"

# PromQL words that are not metric names: functions are followed by "(" and dropped anyway; these are not.
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool"})
_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"')
_MATCHERS = re.compile(r"\{[^{}]*\}")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)")
_RANGES = re.compile(r"\[[^\]]*\]")
_VARIABLES = re.compile(r"\$\{?\w+\}?")
_IDENTIFIER = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (label names, functions, keywords and numbers left out)."""
    bare = _STRINGS.sub('""', expr)
    bare = _MATCHERS.sub(" ", bare)
    bare = _GROUPING.sub(" ", bare)
    bare = _RANGES.sub(" ", bare)
    bare = _VARIABLES.sub(" ", bare)
    return {name for name in _IDENTIFIER.findall(bare) if name not in _KEYWORDS and not re.fullmatch(r"[eE]\d*", name)}


def test_metric_names_are_found_in_expressions():
    expr = 'histogram_quantile(0.99, sum by (le, route) (rate(x_bucket{route!~"/a|/b"}[$__rate_interval]))) / y > 1'
    assert metric_names(expr) == {"x_bucket", "y"}
    assert metric_names("sum(a) - sum(b{c='d'}) and on (job) increase(c_total[5m]) == 0") == {"a", "b", "c_total"}


def dashboard_expressions() -> list[str]:
    dashboard = json.loads((DEPLOY / "grafana" / "stories.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if isinstance(query, dict):
            exprs.append(re.sub(r"^label_values\((\w+),.*\)$", r"\1", query["query"]))
    return exprs


def rule_expressions() -> list[str]:
    rules = yaml.safe_load((DEPLOY / "prometheus" / "stories-alerts.yml").read_text())
    return [rule["expr"] for group in rules["groups"] for rule in group["rules"]]


def exported_samples(text: str) -> set[str]:
    """Every sample name a /metrics scrape can hold, from its `# TYPE` lines (a labelled family with no
    children yet has no samples, but its type says what they will be called)."""
    suffixes = {
        "counter": ("_created",),
        "gauge": ("",),
        "histogram": ("_bucket", "_sum", "_count", "_created"),
        "summary": ("", "_sum", "_count", "_created"),
    }
    names = set()
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split()
            if kind == "counter":
                name = name.removesuffix("_total")
                names.add(f"{name}_total")
            names |= {name + suffix for suffix in suffixes.get(kind, ("",))}
    return names


@pytest.mark.parametrize("source", ["dashboard", "rules"])
async def test_every_metric_used_in_deploy_is_exported(client, source):
    exprs = dashboard_expressions() if source == "dashboard" else rule_expressions()
    used = set().union(*(metric_names(expr) for expr in exprs))
    assert len(used) >= 5
    response = await client.get("/metrics")
    exported = exported_samples((await response.get_data()).decode())
    assert not used - exported, f"not exported by /metrics: {sorted(used - exported)}"


def test_the_dashboard_covers_what_operators_watch():
    used = set().union(*(metric_names(expr) for expr in dashboard_expressions()))
    for name in (
        "http_requests_total",
        "http_request_duration_seconds_bucket",
        "db_pool_connections",
        "db_pool_idle_connections",
        "ws_connections",
        "ws_events_sent_total",
        "ws_events_dropped_total",
        "stories_expired_total",
        "rate_limited_total",
        "actor_restarts_total",
        "reports_total",
        "moderation_actions_total",
        "moderation_open_reports",
        "moderation_oldest_open_report_age_seconds",
    ):
        assert name in used, name


def test_the_alert_rules_watch_the_moderation_queue():
    used = set().union(*(metric_names(expr) for expr in rule_expressions()))
    assert {"moderation_oldest_open_report_age_seconds", "reports_total"} <= used


def manifests() -> dict[tuple[str, str], dict]:
    """(kind, name) -> resource, from every file in deploy/kubernetes (the Secret example included)."""
    resources = {}
    for path in sorted((DEPLOY / "kubernetes").glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for resource in yaml.safe_load_all(path.read_text()):
            resources[(resource["kind"], resource["metadata"]["name"])] = resource
    return resources


def test_kustomization_lists_every_manifest_but_the_secret_example():
    kustomization = yaml.safe_load((DEPLOY / "kubernetes" / "kustomization.yaml").read_text())
    files = {path.name for path in (DEPLOY / "kubernetes").glob("*.yaml")}
    assert set(kustomization["resources"]) == files - {"kustomization.yaml", "secret.example.yaml"}


@pytest.mark.parametrize(("deployment", "command"), [("stories-api", "serve"), ("stories-worker", "worker")])
def test_deployments_probe_served_routes_and_outlast_the_drain(deployment, command):
    resources = manifests()
    config = resources[("ConfigMap", "stories")]["data"]
    pod = resources[("Deployment", deployment)]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == [command]
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["resources"]["requests"]["cpu"]
    assert container["resources"]["requests"]["memory"]
    pause = 0
    pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {}).get("command")
    if pre_stop:
        assert pre_stop[0] == "sleep"
        pause = int(pre_stop[1])
    # SIGTERM: the pause, then the drain, then the actors (the counter flusher has 2 s) and the pool.
    assert pod["terminationGracePeriodSeconds"] >= pause + float(config["DRAIN_SECONDS"]) + 10
    assert pod["securityContext"]["runAsNonRoot"] is True


def test_configuration_names_only_variables_the_service_reads():
    resources = manifests()
    named = set(resources[("ConfigMap", "stories")]["data"]) | set(resources[("Secret", "stories")]["stringData"])
    assert named <= variables_the_service_reads()
    assert {"DATABASE_URL", "JWT_SECRET", "STORIES_ENV"} <= named


def test_ingress_keeps_websockets_open_longer_than_the_server_pings():
    resources = manifests()
    config = resources[("ConfigMap", "stories")]["data"]
    annotations = resources[("Ingress", "stories")]["metadata"]["annotations"]
    for timeout in ("proxy-read-timeout", "proxy-send-timeout"):
        assert int(annotations[f"nginx.ingress.kubernetes.io/{timeout}"]) > float(config["WS_DEAD_AFTER_SECONDS"])


def compose() -> dict:
    return yaml.safe_load((DEPLOY.parent / "docker-compose.yml").read_text())


def dockerfile_stages() -> list[str]:
    text = (DEPLOY.parent / "Dockerfile").read_text()
    return re.findall(r"^FROM \S+ AS (\S+)$", text, flags=re.MULTILINE)


def test_compose_file_follows_the_compose_specification():
    """The compose-spec parser (the Rust compose_spec crate) refuses unknown keys, bad durations and types, as
    `docker compose config` would; YAML merge keys are resolved first, as Compose does."""
    compose_spec = pytest.importorskip("compose_spec")
    parsed = compose_spec.PyCompose.from_json(json.dumps(compose()))
    assert {"api1", "api2", "worker", "postgres", "redis", "minio", "minio-init"} <= set(parsed.service_names())


def test_compose_wiring():
    services = compose()["services"]
    stages = dockerfile_stages()
    for name, service in services.items():
        for dependency in service.get("depends_on", {}):
            assert dependency in services, (name, dependency)
        build = service.get("build")
        if build is not None:
            assert build["target"] in stages, (name, build)
    assert services["worker"]["build"]["target"] == "worker"
    assert {services[name]["build"]["target"] for name in ("api1", "api2")} == {"api"}
    for name in ("api1", "api2", "worker"):
        environment = services[name]["environment"]
        # From .env, required: no secret of the compose file's own, and every process gets the same one.
        assert environment["JWT_SECRET"].startswith("${JWT_SECRET:?")
        assert environment["DATABASE_URL"].startswith("postgres://")
        assert set(environment) <= variables_the_service_reads()
        assert environment["MINIO_ENDPOINT"] == "minio:9000"
    published = [port.split(":")[-2] for service in services.values() for port in service.get("ports", [])]
    # The README's ports for `stories serve` outside containers stay free.
    assert not {"5000", "5001"} & set(published)
    assert len(published) == len(set(published))


def test_dockerfile_targets_run_as_a_user_with_a_healthcheck_it_can_run():
    text = (DEPLOY.parent / "Dockerfile").read_text()
    stages = dockerfile_stages()
    assert {"api", "worker"} <= set(stages)
    assert stages[-1] == "api"  # `docker build .` makes the API image
    (user,) = re.findall(r"^USER (\S+)$", text, flags=re.MULTILINE)
    assert user.split(":")[0] not in ("0", "root")
    (healthcheck,) = re.findall(r"CMD \[\"python\", .*healthz.*\]$", text, flags=re.MULTILINE)
    assert "urllib.request" in healthcheck  # the image's own Python: the slim image has no curl or wget
    assert re.search(r"^ENTRYPOINT \[\"stories\"\]$", text, flags=re.MULTILINE)
