#!/usr/bin/env python3
"""Checks of the Helm chart in charts/scanreport-operator.

Run it through scripts/chart-check.sh, which provides a virtualenv with helm-python-sdk (the Helm
v4 engine as a library, no helm binary) and kubernetes-validate (the Kubernetes OpenAPI schemas
as JSON schemas).

    chart_check.py                       lint, render and validate the chart; assert what users see
    chart_check.py render [--name N] [--namespace NS] [--values JSON]
                                         print the rendered manifests as a JSON array (for tests)

Every check prints one line; the last line is "N passed, M failed" and the exit status is non-zero
when anything failed.
"""

from __future__ import annotations

import argparse
import copy
import functools
import json
import pathlib
import sys
import traceback
from typing import Any, Callable

import yaml
from helm_python import chart as helm_chart
from kubernetes_validate import utils as kv

ROOT = pathlib.Path(__file__).resolve().parent.parent
CHART = ROOT / "charts" / "scanreport-operator"
CRDS = ROOT / "crds"
RELEASE = "sro"
RELEASE_NAMESPACE = "scanning"
FULLNAME = f"{RELEASE}-scanreport-operator"
# Cluster-scoped objects carry the release namespace too.
CLUSTER_NAME = f"{RELEASE_NAMESPACE}-{FULLNAME}"
# The oldest and the newest Kubernetes versions the chart supports (kubeVersion >=1.33: CEL rules
# and selectableFields in the CRDs, k8s-openapi 0.29's range).
KUBE_VERSIONS = ["1.33.0", "1.37.0"]

# What the operator may do, as (API group, resource, verbs): derived from src/controller/ and
# proven necessary and sufficient by tests/rbac.rs. Changing the chart's rules means changing
# this table, docs/deploy.md and the removal list in tests/rbac.rs together.
SCANNER_RULES = {
    ("scanreport.io", "scanners"): ["list", "watch"],
    ("scanreport.io", "scanners/status"): ["patch"],
    ("scanreport.io", "scanpolicies"): ["list", "watch"],
}
NAMESPACED_RULES = {
    ("scanreport.io", "scanrequests"): ["list", "watch"],
    ("scanreport.io", "scanrequests/status"): ["patch"],
    ("", "secrets"): ["get"],
    ("events.k8s.io", "events"): ["create", "patch"],
}
LEASE_RULES = {
    ("coordination.k8s.io", "leases"): ["get", "create", "patch"],
}

# The value sets rendered and validated.
VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "leader election off": {"leaderElection": {"enabled": False}},
    "namespaced": {"watchNamespaces": ["team-a", "team-b"]},
    "namespaced, release namespace watched": {
        "watchNamespaces": ["team-a", RELEASE_NAMESPACE],
    },
    "service monitor": {"serviceMonitor": {"enabled": True, "labels": {"release": "prom"}}},
    "network policy": {"networkPolicy": {
        "enabled": True,
        "metricsFrom": [{"namespaceSelector": {"matchLabels": {
            "kubernetes.io/metadata.name": "monitoring"}}}],
        "egress": [{"ports": [{"port": 53, "protocol": "UDP"}, {"port": 53, "protocol": "TCP"}]},
                   {"to": [{"ipBlock": {"cidr": "10.0.0.0/8"}}]}],
    }},
    "one replica": {"replicas": 1},
    "report API, Helm-made certificate": {"reportApi": {"enabled": True}},
    "report API, own Secret": {"reportApi": {"enabled": True, "certificates": {
        "source": "secret", "existingSecret": "reports-tls", "caBundle": "Y2E="}}},
    "report API, cert-manager": {"reportApi": {"enabled": True, "certificates": {
        "source": "certManager",
        "certManager": {"issuerRef": {"name": "cluster-ca", "kind": "ClusterIssuer"}}}}},
    "everything set": {
        "image": {"repository": "registry.example.com/scanreport-operator", "tag": "0.1.0-rc1",
                  "pullPolicy": "Always"},
        "imagePullSecrets": [{"name": "regcred"}],
        "replicas": 3,
        "database": {"existingSecret": "pg", "secretKey": "dsn"},
        "watchNamespaces": ["team-a"],
        "concurrency": 4,
        "defaultMaxInFlight": 2,
        "logLevel": "info,scanreport_operator=debug",
        "logFormat": "text",
        "extraEnv": [{"name": "SCAN_TIMEOUT", "value": "45m"}],
        "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::1:role/x"}},
        "service": {"annotations": {"a": "b"}},
        "serviceMonitor": {"enabled": True},
        "podAnnotations": {"p": "q"},
        "podLabels": {"team": "security"},
        "priorityClassName": "system-cluster-critical",
        "nodeSelector": {"kubernetes.io/os": "linux"},
        "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "ops",
                         "effect": "NoSchedule"}],
        "affinity": {"podAntiAffinity": {"preferredDuringSchedulingIgnoredDuringExecution": [{
            "weight": 100,
            "podAffinityTerm": {"topologyKey": "kubernetes.io/hostname", "labelSelector": {
                "matchLabels": {"app.kubernetes.io/name": "scanreport-operator"}}}}]}},
    },
}


# --- rendering -------------------------------------------------------------------------------


def render_raw(values: dict[str, Any], name: str = RELEASE,
               namespace: str = RELEASE_NAMESPACE) -> dict[str, str]:
    with helm_chart.Chart.load(CHART) as chart:
        return chart.render(values, name=name, namespace=namespace, is_install=True)


def render(values: dict[str, Any], name: str = RELEASE,
           namespace: str = RELEASE_NAMESPACE) -> list[dict[str, Any]]:
    """The rendered objects, in template order, without NOTES.txt. Values that do not mention
    reportApi render without it: most checks are about the reconciler's objects, and the report
    API (on by default) has checks of its own."""
    if "reportApi" not in values:
        values = {**values, "reportApi": {"enabled": False}}
    docs = []
    for path, text in sorted(render_raw(values, name, namespace).items()):
        if path.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(text):
            if doc:
                docs.append(doc)
    return docs


def notes(values: dict[str, Any]) -> str:
    return "".join(t for p, t in render_raw(values).items() if p.endswith("NOTES.txt"))


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [d for d in docs if d["kind"] == kind]


def one(docs: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(docs, kind)
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    containers = one(docs, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1, containers
    return containers[0]


def env_of(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container(docs)["env"]}


def rules_of(role: dict[str, Any]) -> dict[tuple[str, str], list[str]]:
    """A role's rules as {(group, resource): verbs}; each (group, resource) in one rule only."""
    out: dict[tuple[str, str], list[str]] = {}
    for rule in role.get("rules", []):
        assert len(rule.get("apiGroups", [])) == 1 and len(rule.get("resources", [])) == 1, (
            f"{role['metadata']['name']}: one API group and one resource per rule: {rule}")
        key = (rule["apiGroups"][0], rule["resources"][0])
        assert key not in out, f"{role['metadata']['name']}: {key} appears in two rules"
        out[key] = rule["verbs"]
    return out


def assert_rules(role: dict[str, Any], expected: dict[tuple[str, str], list[str]]) -> None:
    actual = rules_of(role)
    assert actual == expected, f"{role['kind']} {role['metadata']['name']}: {actual} != {expected}"


def merged(values: dict[str, Any]) -> dict[str, Any]:
    with helm_chart.Chart.load(CHART) as chart:
        return chart.merge_values(values)


# --- validation ------------------------------------------------------------------------------

# kubernetes-validate reads two JSON files from disk for every object; cache them.
kv.schema_contents = functools.lru_cache(maxsize=None)(kv.schema_contents)


def validate_strict(doc: dict[str, Any], version: str) -> None:
    """Strict schema validation (unknown fields are errors). A kind without a schema is an error
    too: the command-line tool merely warns about those and passes."""
    what = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
    try:
        kv.validate(doc, version, strict=True)
    except kv.ValidationError as e:
        path = ".".join(str(p) for p in e.path)
        raise AssertionError(f"{what} against {version}: {path}: {e.message}") from None
    except kv.SchemaNotFoundError as e:
        raise AssertionError(f"{what}: {e.message}") from None


def metrics_service(docs: list[dict[str, Any]]) -> dict[str, Any]:
    return next(d for d in of_kind(docs, "Service") if d["metadata"]["name"] == FULLNAME)


def check_certificate_shape(cert: dict[str, Any]) -> None:
    """cert-manager's Certificate: the fields the report API needs."""
    assert cert["apiVersion"] == "cert-manager.io/v1", cert["apiVersion"]
    spec = cert["spec"]
    assert set(spec) == {"secretName", "dnsNames", "issuerRef"}, sorted(spec)
    assert spec["issuerRef"].get("name"), spec


def check_service_monitor_shape(sm: dict[str, Any], service: dict[str, Any]) -> None:
    """kubernetes-validate only knows built-in kinds, and the Prometheus Operator's CRD is not
    ours to vendor; so check the fields a ServiceMonitor needs to scrape our Service."""
    assert sm["apiVersion"] == "monitoring.coreos.com/v1", sm["apiVersion"]
    assert set(sm) == {"apiVersion", "kind", "metadata", "spec"}, sorted(sm)
    assert set(sm["metadata"]) <= {"name", "namespace", "labels", "annotations"}, sm["metadata"]
    spec = sm["spec"]
    assert set(spec) <= {"selector", "namespaceSelector", "endpoints", "jobLabel"}, sorted(spec)
    labels = service["metadata"]["labels"]
    for k, v in spec["selector"]["matchLabels"].items():
        assert labels.get(k) == v, f"the ServiceMonitor selector {k}={v} misses the Service"
    assert spec["namespaceSelector"] == {"matchNames": [service["metadata"]["namespace"]]}
    ports = {p["name"] for p in service["spec"]["ports"]}
    assert spec["endpoints"], "no endpoints"
    for ep in spec["endpoints"]:
        assert set(ep) <= {"port", "path", "interval", "scrapeTimeout", "scheme"}, sorted(ep)
        assert ep["port"] in ports, f"endpoint port {ep['port']} is not a Service port {ports}"
        assert ep["path"] == "/metrics"
        for field in ("interval", "scrapeTimeout"):
            v = ep[field]
            assert isinstance(v, str) and v[:-1].isdigit() and v[-1] in "smh", f"{field}: {v!r}"


# --- the checks ------------------------------------------------------------------------------

CHECKS: list[tuple[str, Callable[[], None]]] = []


def check(name: str) -> Callable[[Callable[[], None]], Callable[[], None]]:
    def register(fn: Callable[[], None]) -> Callable[[], None]:
        CHECKS.append((name, fn))
        return fn
    return register


def lint_report(values: dict[str, Any] | None) -> None:
    report = helm_chart.lint(CHART, values, strict=True, namespace=RELEASE_NAMESPACE)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [
        {"error": e} for e in report["errors"]]
    assert report["total_charts_linted"] == 1, report
    assert not problems, json.dumps(problems, indent=1)


@check("helm lint --strict with the default values")
def _lint_default() -> None:
    lint_report(None)


for _name, _values in VARIANTS.items():
    if _values:
        check(f"helm lint --strict: {_name}")(functools.partial(lint_report, _values))


def validate_variant(values: dict[str, Any]) -> None:
    docs = render(values)
    assert docs, "nothing rendered"
    service_monitors = of_kind(docs, "ServiceMonitor")
    for sm in service_monitors:
        check_service_monitor_shape(sm, metrics_service(docs))
    for cert in of_kind(docs, "Certificate"):
        check_certificate_shape(cert)
    # The Prometheus Operator's and cert-manager's CRDs are not ours to vendor.
    rest = [d for d in docs if d["kind"] not in ("ServiceMonitor", "Certificate")]
    for version in KUBE_VERSIONS:
        for doc in rest:
            validate_strict(doc, version)
    names = [(d["kind"], d["metadata"].get("namespace"), d["metadata"]["name"]) for d in docs]
    assert len(names) == len(set(names)), f"duplicate objects: {names}"
    for d in docs:
        if d["kind"] in ("ClusterRole", "ClusterRoleBinding", "APIService"):
            assert "namespace" not in d["metadata"], f"cluster-scoped {d['kind']} with namespace"
        else:
            assert d["metadata"].get("namespace"), f"{d['kind']} {d['metadata']['name']}: no namespace"


for _name, _values in VARIANTS.items():
    check(f"renders and validates strictly ({', '.join(KUBE_VERSIONS)}): {_name}")(
        functools.partial(validate_variant, _values))


@check("chart CRDs are byte-identical copies of crds/")
def _crd_copies() -> None:
    ours = sorted(p.name for p in CRDS.glob("*.yaml"))
    copies = sorted(p.name for p in (CHART / "crds").glob("*.yaml"))
    assert ours and ours == copies, f"crds/ has {ours}, the chart has {copies}; run: cp crds/*.yaml {CHART.relative_to(ROOT)}/crds/"
    for name in ours:
        assert (CRDS / name).read_bytes() == (CHART / "crds" / name).read_bytes(), (
            f"{name} differs; run: cp crds/*.yaml {CHART.relative_to(ROOT)}/crds/")
    with helm_chart.Chart.load(CHART) as chart:
        assert len(chart.crds) == len(ours), f"Helm sees {len(chart.crds)} CRDs"


@check("the chart's CRDs validate strictly")
def _crds_validate() -> None:
    for path in sorted((CHART / "crds").glob("*.yaml")):
        docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        assert len(docs) == 1 and docs[0]["kind"] == "CustomResourceDefinition", path
        assert docs[0]["metadata"]["name"] == path.stem, f"{path.name}: named {docs[0]['metadata']['name']}"
        for version in KUBE_VERSIONS:
            validate_strict(docs[0], version)


@check("default install: cluster-wide roles with exactly the needed rules")
def _cluster_wide_rbac() -> None:
    docs = render({})
    roles = {r["metadata"]["name"]: r for r in of_kind(docs, "ClusterRole")}
    assert set(roles) == {CLUSTER_NAME, f"{CLUSTER_NAME}-scanners"}, sorted(roles)
    assert_rules(roles[f"{CLUSTER_NAME}-scanners"], SCANNER_RULES)
    assert_rules(roles[CLUSTER_NAME], NAMESPACED_RULES)
    namespaced = of_kind(docs, "Role")
    assert [r["metadata"]["name"] for r in namespaced] == [f"{FULLNAME}-leader-election"]
    assert namespaced[0]["metadata"]["namespace"] == RELEASE_NAMESPACE
    assert_rules(namespaced[0], LEASE_RULES)
    check_bindings(docs)


@check("namespaced install: a Role and RoleBinding per namespace, no ClusterRole reads Secrets")
def _namespaced_rbac() -> None:
    docs = render(VARIANTS["namespaced"])
    cluster_roles = of_kind(docs, "ClusterRole")
    assert [r["metadata"]["name"] for r in cluster_roles] == [f"{CLUSTER_NAME}-scanners"]
    assert_rules(cluster_roles[0], SCANNER_RULES)
    roles = {(r["metadata"]["namespace"], r["metadata"]["name"]): r for r in of_kind(docs, "Role")}
    assert set(roles) == {("team-a", FULLNAME), ("team-b", FULLNAME),
                          (RELEASE_NAMESPACE, f"{FULLNAME}-leader-election"),
                          (RELEASE_NAMESPACE, f"{FULLNAME}-scanner-secrets")}, sorted(roles)
    for ns in ("team-a", "team-b"):
        assert_rules(roles[(ns, FULLNAME)], NAMESPACED_RULES)
    bindings = {(b["metadata"]["namespace"], b["metadata"]["name"]) for b in of_kind(docs, "RoleBinding")}
    assert bindings == set(roles), f"bindings {sorted(bindings)} != roles {sorted(roles)}"
    check_bindings(docs)
    args = container(docs)["args"]
    assert "--namespaces=team-a,team-b" in args, args


@check("same release name in two namespaces: no cluster-scoped name collides")
def _two_releases() -> None:
    def cluster_scoped(namespace: str) -> set[tuple[str, str]]:
        return {(d["kind"], d["metadata"]["name"])
                for d in render(VARIANTS["namespaced"], namespace=namespace)
                if d["kind"] in ("ClusterRole", "ClusterRoleBinding")}
    a, b = cluster_scoped("team-a-ops"), cluster_scoped("team-b-ops")
    assert a and b and not a & b, f"{sorted(a & b)}"


@check("Scanner auth Secrets: get-only, in the release namespace only, when it is not watched")
def _scanner_secret_rbac() -> None:
    def scanner_roles(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in of_kind(docs, "Role")
                if r["metadata"]["name"] == f"{FULLNAME}-scanner-secrets"]
    docs = render(VARIANTS["namespaced"])
    extra = scanner_roles(docs)
    assert [r["metadata"]["namespace"] for r in extra] == [RELEASE_NAMESPACE], extra
    assert_rules(extra[0], {("", "secrets"): ["get"]})
    check_bindings(docs)
    # The release namespace watched: its Role covers it.
    assert not scanner_roles(render(VARIANTS["namespaced, release namespace watched"]))
    # Watching all namespaces, the ClusterRole covers it.
    assert not scanner_roles(render({}))
    for value in ("verify", "trust"):
        args = container(render({"artifactAccess": value}))["args"]
        assert f"--artifact-access={value}" in args, args
    assert "--artifact-access=verify" in container(render({}))["args"]
    args = container(render({"reportRetention": "0", "jobRetention": "2h"}))["args"]
    assert "--report-retention=0" in args and "--job-retention=2h" in args, args


def check_bindings(docs: list[dict[str, Any]]) -> None:
    """Every binding names a rendered role of the right kind, in its namespace, and binds only the
    operator's ServiceAccount."""
    sa = one(docs, "ServiceAccount")
    subject = {"kind": "ServiceAccount", "name": sa["metadata"]["name"],
               "namespace": sa["metadata"]["namespace"]}
    roles = {(r["kind"], r["metadata"].get("namespace"), r["metadata"]["name"])
             for r in docs if r["kind"] in ("Role", "ClusterRole")}
    bound = set()
    for b in docs:
        if b["kind"] not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        assert b["subjects"] == [subject], f"{b['metadata']['name']}: subjects {b['subjects']}"
        ref = b["roleRef"]
        assert ref["apiGroup"] == "rbac.authorization.k8s.io"
        ns = b["metadata"].get("namespace") if ref["kind"] == "Role" else None
        target = (ref["kind"], ns, ref["name"])
        assert target in roles, f"{b['metadata']['name']} refers to {target}, not rendered"
        bound.add(target)
    assert bound == roles, f"roles without binding: {roles - bound}"


@check("no wildcards, no non-resource URLs, Secrets are get-only, nothing escalates")
def _no_wildcards() -> None:
    for name, values in VARIANTS.items():
        for role in [d for d in render(values) if d["kind"] in ("Role", "ClusterRole")]:
            for rule in role["rules"]:
                assert "nonResourceURLs" not in rule, (name, rule)
                assert "aggregationRule" not in role
                for field in ("apiGroups", "resources", "verbs", "resourceNames"):
                    assert not any("*" in x for x in rule.get(field, [])), (name, field, rule)
                assert not set(rule["verbs"]) & {"escalate", "bind", "impersonate", "delete",
                                                 "deletecollection", "update"}, (name, rule)
                if "secrets" in rule["resources"]:
                    assert rule["verbs"] == ["get"], (name, rule)


@check("pod and container securityContext: non-root 65532, read-only, no privileges")
def _security_context() -> None:
    deployment = one(render({}), "Deployment")
    pod = deployment["spec"]["template"]["spec"]["securityContext"]
    assert pod["runAsNonRoot"] is True and pod["runAsUser"] == 65532, pod
    assert pod["seccompProfile"] == {"type": "RuntimeDefault"}, pod
    sc = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == 65532, sc
    assert sc["readOnlyRootFilesystem"] is True, sc
    assert sc["allowPrivilegeEscalation"] is False, sc
    assert sc["capabilities"] == {"drop": ["ALL"]}, sc
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}, sc
    assert "privileged" not in sc or sc["privileged"] is False


@check("DATABASE_URL comes from a secretKeyRef; no credentials in the manifests")
def _database_url() -> None:
    for values, secret, key in [({}, "scanreport-operator-database", "url"),
                                (VARIANTS["everything set"], "pg", "dsn")]:
        docs = render(values)
        env = env_of(docs)["DATABASE_URL"]
        assert "value" not in env, env
        assert env["valueFrom"] == {"secretKeyRef": {"name": secret, "key": key}}, env
        text = json.dumps(docs)
        assert "postgres://" not in text and "postgresql://" not in text
        assert not of_kind(docs, "Secret"), "the chart must not create the database Secret"
    try:
        render({"database": {"existingSecret": "", "secretKey": "url"}})
    except Exception as e:  # noqa: BLE001 - any Helm error will do, the message matters
        assert "existingSecret" in str(e), e
    else:
        raise AssertionError("an empty database.existingSecret rendered")


@check("POD_NAME and POD_NAMESPACE come from the downward API")
def _downward_api() -> None:
    env = env_of(render({}))
    assert env["POD_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}
    assert env["POD_NAMESPACE"]["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.namespace"}}


@check("args: run with the configured flags; probes on /healthz and /readyz")
def _args_and_probes() -> None:
    docs = render({})
    c = container(docs)
    assert c["args"] == [
        "run", "--listen=0.0.0.0:8080", "--log-format=json", "--log-level=info",
        "--concurrency=16", "--default-max-in-flight=4", "--artifact-access=verify",
        "--report-retention=30d", "--job-retention=24h",
        "--leader-election=true",
        "--lease-name=scanreport-operator"], c["args"]
    assert "command" not in c, "the image's ENTRYPOINT is the binary"
    assert c["ports"] == [{"name": "http", "containerPort": 8080, "protocol": "TCP"}]
    assert c["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    c = container(render(VARIANTS["everything set"]))
    for flag in ("--log-format=text", "--log-level=info,scanreport_operator=debug",
                 "--concurrency=4", "--default-max-in-flight=2", "--namespaces=team-a"):
        assert flag in c["args"], (flag, c["args"])
    assert {"name": "SCAN_TIMEOUT", "value": "45m"} in c["env"]


@check("leader election off: no Lease role, --leader-election=false")
def _leader_election_off() -> None:
    docs = render(VARIANTS["leader election off"])
    assert not [r for r in of_kind(docs, "Role") if "leader" in r["metadata"]["name"]]
    assert not any(("coordination.k8s.io", "leases") in rules_of(r)
                   for r in docs if r["kind"] in ("Role", "ClusterRole"))
    args = container(docs)["args"]
    assert "--leader-election=false" in args and not any(a.startswith("--lease-name") for a in args)
    docs = render({"leaderElection": {"leaseName": "other"}})
    assert "--lease-name=other" in container(docs)["args"]


@check("image tag defaults to the chart's appVersion")
def _image() -> None:
    with helm_chart.Chart.load(CHART) as chart:
        app_version = chart.metadata["appVersion"]
    assert app_version == "0.1.0", app_version
    assert container(render({}))["image"] == f"scanreport-operator:{app_version}"
    c = container(render(VARIANTS["everything set"]))
    assert c["image"] == "registry.example.com/scanreport-operator:0.1.0-rc1"
    assert c["imagePullPolicy"] == "Always"


@check("replicas 2 by default with a PodDisruptionBudget; none for one replica")
def _pdb() -> None:
    docs = render({})
    assert one(docs, "Deployment")["spec"]["replicas"] == 2
    pdb = one(docs, "PodDisruptionBudget")
    assert pdb["spec"]["minAvailable"] == 1
    assert not of_kind(render({"replicas": 1}), "PodDisruptionBudget")
    assert not of_kind(render({"podDisruptionBudget": {"enabled": False}}), "PodDisruptionBudget")


@check("selectors: Deployment, Service and PDB select the operator's pods")
def _selectors() -> None:
    for name, values in VARIANTS.items():
        docs = render(values)
        deployment = one(docs, "Deployment")
        pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
        selectors = [deployment["spec"]["selector"]["matchLabels"],
                     metrics_service(docs)["spec"]["selector"]]
        selectors += [p["spec"]["selector"]["matchLabels"] for p in of_kind(docs, "PodDisruptionBudget")]
        for selector in selectors:
            assert selector and all(pod_labels.get(k) == v for k, v in selector.items()), (name, selector)
        assert deployment["spec"]["template"]["spec"]["serviceAccountName"] == \
            one(docs, "ServiceAccount")["metadata"]["name"]


@check("metrics Service on 8080; ServiceMonitor only when enabled")
def _service_monitor() -> None:
    docs = render({})
    service = metrics_service(docs)
    assert service["spec"]["ports"] == [{"name": "http", "port": 8080, "targetPort": "http",
                                         "protocol": "TCP"}]
    assert not of_kind(docs, "ServiceMonitor")
    assert merged({})["serviceMonitor"]["enabled"] is False
    sm = one(render(VARIANTS["service monitor"]), "ServiceMonitor")
    assert sm["metadata"]["labels"]["release"] == "prom"
    try:
        render({"service": {"enabled": False}, "serviceMonitor": {"enabled": True}})
    except Exception as e:  # noqa: BLE001
        assert "service.enabled" in str(e), e
    else:
        raise AssertionError("a ServiceMonitor without a Service rendered")


@check("NetworkPolicy: off by default; when on, selects the operator, opens only port http")
def _network_policy() -> None:
    assert not of_kind(render({}), "NetworkPolicy")
    docs = render(VARIANTS["network policy"])
    policy = one(docs, "NetworkPolicy")
    deployment = one(docs, "Deployment")
    assert policy["spec"]["podSelector"]["matchLabels"] == \
        deployment["spec"]["selector"]["matchLabels"]
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    [ingress] = policy["spec"]["ingress"]
    assert ingress["ports"] == [{"port": "http", "protocol": "TCP"}]
    assert ingress["from"][0]["namespaceSelector"]["matchLabels"] == {
        "kubernetes.io/metadata.name": "monitoring"}
    assert len(policy["spec"]["egress"]) == 2
    # Without egress rules, egress is not restricted (no Egress policy type).
    open_egress = one(render({"networkPolicy": {"enabled": True}}), "NetworkPolicy")
    assert open_egress["spec"]["policyTypes"] == ["Ingress"]
    assert "from" not in open_egress["spec"]["ingress"][0]


@check("scheduling and metadata values reach the pod")
def _scheduling() -> None:
    docs = render(VARIANTS["everything set"])
    spec = one(docs, "Deployment")["spec"]["template"]["spec"]
    v = VARIANTS["everything set"]
    assert spec["nodeSelector"] == v["nodeSelector"]
    assert spec["tolerations"] == v["tolerations"]
    assert spec["affinity"] == v["affinity"]
    assert spec["imagePullSecrets"] == v["imagePullSecrets"]
    assert spec["priorityClassName"] == v["priorityClassName"]
    meta = one(docs, "Deployment")["spec"]["template"]["metadata"]
    assert meta["annotations"] == v["podAnnotations"] and meta["labels"]["team"] == "security"
    assert one(docs, "ServiceAccount")["metadata"]["annotations"] == v["serviceAccount"]["annotations"]


@check("an existing ServiceAccount: named, not created, still bound")
def _existing_service_account() -> None:
    docs = render({"serviceAccount": {"create": False, "name": "ops"}})
    assert not of_kind(docs, "ServiceAccount")
    assert one(docs, "Deployment")["spec"]["template"]["spec"]["serviceAccountName"] == "ops"
    for b in docs:
        if b["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            assert b["subjects"] == [{"kind": "ServiceAccount", "name": "ops",
                                      "namespace": RELEASE_NAMESPACE}], b
    try:
        render({"serviceAccount": {"create": False}})
    except Exception as e:  # noqa: BLE001
        assert "serviceAccount.name" in str(e), e
    else:
        raise AssertionError("serviceAccount.create=false without a name rendered")
    assert not [d for d in render({"rbac": {"create": False}}) if "Role" in d["kind"]]


@check("values schema rejects typos and bad values")
def _schema() -> None:
    for bad, needle in [({"logFormat": "yaml"}, "logFormat"),
                        ({"watchNamespace": ["team-a"]}, "watchNamespace"),
                        ({"replicas": "two"}, "replicas"),
                        ({"watchNamespaces": ["Team_A"]}, "watchNamespaces"),
                        ({"concurrency": 0}, "concurrency"),
                        ({"reportRetention": "30 days"}, "reportRetention")]:
        try:
            render(bad)
        except Exception as e:  # noqa: BLE001
            assert needle in str(e), f"{bad}: {e}"
        else:
            raise AssertionError(f"{bad} rendered")


@check("NOTES.txt names the database Secret and the CRD upgrade step")
def _notes() -> None:
    text = notes({})
    assert "create secret generic scanreport-operator-database" in text, text
    assert "--from-literal=url=" in text
    assert "kubectl apply --server-side --force-conflicts -f" in text and "crds/" in text
    assert "all namespaces" in text
    assert "team-a, team-b" in notes(VARIANTS["namespaced"])


@check("examples/dev-scanner-deployment.yaml: validates strictly, a Service in front of dev-scanner")
def _dev_scanner_example() -> None:
    path = ROOT / "examples" / "dev-scanner-deployment.yaml"
    text = path.read_text()
    assert "kind: ScanRequest" not in text, "tests apply every example with ScanRequests"
    docs = [d for d in yaml.safe_load_all(text) if d]
    assert [d["kind"] for d in docs] == ["Deployment", "Service"], [d["kind"] for d in docs]
    for version in KUBE_VERSIONS:
        for doc in docs:
            validate_strict(doc, version)
    deployment, service = docs
    assert service["metadata"]["name"] == "scanreport-dev-scanner"
    assert "http://scanreport-dev-scanner.scanning:8080" in text
    pod = deployment["spec"]["template"]
    c = pod["spec"]["containers"][0]
    assert c["args"] == ["--listen", "0.0.0.0:8080"], c["args"]
    assert c["image"].startswith("scanreport-dev-scanner:"), c["image"]
    assert c["ports"][0]["containerPort"] == 8080 and service["spec"]["ports"][0]["port"] == 8080
    labels = pod["metadata"]["labels"]
    assert all(labels.get(k) == v for k, v in service["spec"]["selector"].items())
    assert c["securityContext"]["readOnlyRootFilesystem"] is True
    assert c["securityContext"]["runAsUser"] == 65532


@check("Dockerfile: locked release build, non-root 65532 runtime, the binary as entrypoint")
def _dockerfile() -> None:
    lines = [line.strip() for line in (ROOT / "Dockerfile").read_text().splitlines()]
    froms = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert len(froms) == 2 and froms[0].startswith("rust:"), froms
    assert froms[1] == "gcr.io/distroless/cc-debian12:nonroot", froms
    assert any("cargo build --release --locked" in line for line in lines)
    assert "USER 65532:65532" in lines
    assert 'ENTRYPOINT ["/usr/local/bin/scanreport-operator"]' in lines
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert "target/" in ignored and ".git/" in ignored, ignored
    for needed in ("src", "crates", "migrations", "Cargo.toml", "Cargo.lock", "benches", "tests"):
        assert not any(p.rstrip("/") == needed for p in ignored), f".dockerignore drops {needed}"


# --- entry points ----------------------------------------------------------------------------


REPORT_API = {"reportApi": {"enabled": True}}
REPORTS_SERVICE = f"{FULLNAME}-reports"


@check("report API: APIService to a Service on the container's report-api port, Helm-made CA as caBundle")
def _report_api() -> None:
    docs = render(REPORT_API)
    api = one(docs, "APIService")
    assert api["metadata"]["name"] == "v1alpha1.reports.scanreport.io"
    spec = api["spec"]
    assert (spec["group"], spec["version"]) == ("reports.scanreport.io", "v1alpha1"), spec
    assert spec["service"] == {"name": REPORTS_SERVICE, "namespace": RELEASE_NAMESPACE,
                               "port": 443}, spec["service"]
    assert "insecureSkipTLSVerify" not in spec, "the aggregator verifies the serving certificate"
    service = next(d for d in of_kind(docs, "Service") if d["metadata"]["name"] == REPORTS_SERVICE)
    assert service["spec"]["ports"] == [{"name": "https", "port": 443, "targetPort": "report-api",
                                         "protocol": "TCP"}], service["spec"]["ports"]
    assert service["spec"]["selector"] == one(docs, "Deployment")["spec"]["selector"]["matchLabels"]
    c = container(docs)
    assert {"name": "report-api", "containerPort": 8443, "protocol": "TCP"} in c["ports"], c["ports"]
    assert "--report-api-listen=0.0.0.0:8443" in c["args"], c["args"]
    secret = one(docs, "Secret")
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"ca.crt", "tls.crt", "tls.key"}
    assert spec["caBundle"] == secret["data"]["ca.crt"], "caBundle is the CA that signed tls.crt"
    pod = one(docs, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "report-api-tls",
                               "secret": {"secretName": secret["metadata"]["name"]}}], pod["volumes"]
    mount = c["volumeMounts"][0]["mountPath"]
    assert f"--report-api-tls-cert-file={mount}/tls.crt" in c["args"], c["args"]
    assert f"--report-api-tls-key-file={mount}/tls.key" in c["args"], c["args"]


@check("report API: readers aggregated into view/edit/admin; the operator delegates authn and authz")
def _report_api_rbac() -> None:
    docs = render(REPORT_API)
    roles = {r["metadata"]["name"]: r for r in of_kind(docs, "ClusterRole")}
    view = roles[f"{CLUSTER_NAME}-reports-view"]
    assert_rules(view, {("reports.scanreport.io", "vulnerabilityreports"): ["get", "list", "watch"],
                        ("reports.scanreport.io", "sbomreports"): ["get", "list", "watch"]})
    for verb in ("view", "edit", "admin"):
        assert view["metadata"]["labels"][f"rbac.authorization.k8s.io/aggregate-to-{verb}"] == "true"
    refs = {(b["kind"], b["metadata"].get("namespace"), b["roleRef"]["name"])
            for b in docs if b["kind"] in ("RoleBinding", "ClusterRoleBinding")}
    assert ("ClusterRoleBinding", None, "system:auth-delegator") in refs, refs
    assert ("RoleBinding", "kube-system", "extension-apiserver-authentication-reader") in refs, refs
    off = render({"reportApi": {"enabled": True, "aggregateToView": False}})
    view = next(r for r in of_kind(off, "ClusterRole") if r["metadata"]["name"].endswith("-reports-view"))
    assert not any("aggregate-to" in k for k in view["metadata"]["labels"]), view["metadata"]


@check("report API: cert-manager issues the certificate and injects the CA; an own Secret needs its CA")
def _report_api_certificates() -> None:
    docs = render(VARIANTS["report API, cert-manager"])
    cert = one(docs, "Certificate")
    assert cert["spec"]["dnsNames"][0] == f"{REPORTS_SERVICE}.{RELEASE_NAMESPACE}.svc"
    api = one(docs, "APIService")
    assert api["metadata"]["annotations"]["cert-manager.io/inject-ca-from"] == (
        f"{RELEASE_NAMESPACE}/{REPORTS_SERVICE}")
    assert "caBundle" not in api["spec"] and not of_kind(docs, "Secret")
    own = render(VARIANTS["report API, own Secret"])
    assert one(own, "APIService")["spec"]["caBundle"] == "Y2E="
    assert not of_kind(own, "Secret"), "the chart does not make the Secret it is given"
    pod = one(own, "Deployment")["spec"]["template"]["spec"]
    assert pod["volumes"][0]["secret"]["secretName"] == "reports-tls"
    try:
        render({"reportApi": {"enabled": True, "certificates": {"source": "secret",
                                                               "existingSecret": "x"}}})
    except Exception as e:  # noqa: BLE001 - the engine's error type
        assert "reportApi.certificates.caBundle" in str(e), e
    else:
        raise AssertionError("an own Secret without caBundle must fail to render")


def run_checks() -> int:
    passed = failed = 0
    for name, fn in CHECKS:
        try:
            fn()
        except Exception as e:  # noqa: BLE001 - report every failure, keep going
            failed += 1
            detail = str(e) or traceback.format_exc(limit=3)
            print(f"FAIL  {name}\n      {type(e).__name__}: {detail}")
        else:
            passed += 1
            print(f"ok    {name}")
    print(f"{passed} passed, {failed} failed")
    return 0 if failed == 0 and passed > 0 else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command")
    r = sub.add_parser("render", help="print the rendered manifests as a JSON array")
    r.add_argument("--name", default=RELEASE)
    r.add_argument("--namespace", default=RELEASE_NAMESPACE)
    r.add_argument("--values", default="{}", help="values as a JSON object")
    args = parser.parse_args()
    if args.command == "render":
        docs = render(json.loads(args.values), args.name, args.namespace)
        json.dump(docs, sys.stdout)
        print()
        return 0
    return run_checks()


if __name__ == "__main__":
    sys.exit(main())
