"""Renders the gateway's Envoy config for deploy/k8s with the generator `make run` uses
(`python -m gateway.envoy_config`), from the descriptor set and OpenAPI document of `make protos`.

Writes (git-ignored, so run it before `kubectl apply -k`; `make k8s-validate` does):
  base/gateway/generated/   descriptors.pb, openapi.json; envoy.yaml from base/gateway/gateway.env
  overlays/NAME/generated/  envoy.yaml from base/gateway/gateway.env, then the gateway.env of each
                            component the overlay lists (in order), then the overlay's own
The config's file paths point where the gateway pod mounts the ConfigMap: /etc/mlmesh/gateway.

Usage, from the repository root: .venv/bin/python deploy/k8s/render_gateway_config.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BUILD = ROOT / "gateway" / "build"
BASE_GATEWAY = K8S / "base" / "gateway"
GENERATED = BASE_GATEWAY / "generated"
# Where gateway.yaml mounts the ConfigMap gateway-config.
MOUNT = "/etc/mlmesh/gateway"
FILES = ("descriptors.pb", "openapi.json")


def read_env(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and # comments are skipped."""
    env: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, separator, value = line.partition("=")
        if not separator or not key.strip():
            sys.exit(f"{path}:{number}: expected KEY=VALUE")
        env[key.strip()] = value.strip()
    return env


def render(settings: dict[str, str], out: Path) -> None:
    """Runs the generator with exactly `settings` (nothing from the caller's MLMESH_* variables)
    and rewrites the local file paths to the pod's."""
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": os.environ.get("HOME", "/tmp"),
        "MLMESH_GATEWAY_DESCRIPTOR": str(GENERATED / "descriptors.pb"),
        "MLMESH_GATEWAY_OPENAPI": str(GENERATED / "openapi.json"),
        **settings,
    }
    with tempfile.TemporaryDirectory() as tmp:
        rendered = Path(tmp) / "envoy.yaml"
        subprocess.run(
            [sys.executable, "-m", "gateway.envoy_config", "--out", str(rendered)],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=subprocess.DEVNULL,
        )
        text = rendered.read_text().replace(f"{GENERATED.resolve()}/", f"{MOUNT}/")
    if str(ROOT) in text:
        sys.exit(f"{out}: a path on this machine is left in the config")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(f"rendered {out.relative_to(ROOT)}")


def overlay_settings(overlay: Path, base: dict[str, str]) -> dict[str, str]:
    kustomization = yaml.safe_load((overlay / "kustomization.yaml").read_text()) or {}
    settings = dict(base)
    for component in kustomization.get("components", []):
        env_file = (overlay / component).resolve() / "gateway.env"
        if env_file.is_file():
            settings |= read_env(env_file)
    if (overlay / "gateway.env").is_file():
        settings |= read_env(overlay / "gateway.env")
    return settings


def main() -> None:
    missing = [name for name in FILES if not (BUILD / name).is_file()]
    if missing:
        sys.exit(f"gateway/build/{missing[0]} is missing: run `make protos` first")
    GENERATED.mkdir(parents=True, exist_ok=True)
    for name in FILES:
        shutil.copyfile(BUILD / name, GENERATED / name)
    base = read_env(BASE_GATEWAY / "gateway.env")
    render(base, GENERATED / "envoy.yaml")
    for overlay in sorted(p.parent for p in (K8S / "overlays").glob("*/kustomization.yaml")):
        render(overlay_settings(overlay, base), overlay / "generated" / "envoy.yaml")


if __name__ == "__main__":
    main()
