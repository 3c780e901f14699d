"""The Kubernetes manifests' own commands, for real: the migrate Job, then web, worker and beat
with the ConfigMap and Secret as their environment (pointed at the test PostgreSQL and Redis),
each until its own probes pass (web's httpGet probes with their headers, the worker's and beat's
exec probes), and the scheduled jobs dispatched and executed by them."""

import http.client
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from scheduling.beat import Dispatch
from tests.support.processes import ROOT, Service, eventually, free_port
from tests.support.steps import postgres_url

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]
KUBERNETES = ROOT / "deploy" / "kubernetes"


def documents():
    for manifest in sorted(KUBERNETES.glob("*.yaml")):
        yield from yaml.safe_load_all(manifest.read_text())


def container(kind: str, name: str) -> dict:
    (found,) = [d for d in documents() if d["kind"] == kind and d["metadata"]["name"] == name]
    return found["spec"]["template"]["spec"]["containers"][0]


def pod_env(tmp_path: Path) -> dict:
    """ConfigMap and Secret as envFrom gives them, with the cluster's addresses replaced by the
    test's database and broker, and the image's paths by the test's own folders."""
    config = {d["kind"]: d for d in documents() if d["kind"] in ("ConfigMap", "Secret")}
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DJANGO_", "CELERY_"))}
    env |= config["ConfigMap"]["data"] | config["Secret"]["stringData"]
    env |= {"DATABASE_URL": postgres_url(), "CELERY_BROKER_URL": os.environ["CELERY_BROKER_URL"],
            "VAR_DIR": str(tmp_path / "var"), "DJANGO_ENV_FILE": "",
            "DJANGO_STATIC_ROOT": os.environ["DJANGO_STATIC_ROOT"],  # collected for the run
            "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    return env


def http_probe(probe: dict, port: int) -> int:
    get = probe["httpGet"]
    headers = {h["name"]: h["value"] for h in get.get("httpHeaders", [])}
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=probe["timeoutSeconds"])
    try:
        connection.request("GET", get["path"], headers=headers)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def exec_probe(probe: dict, env: dict) -> int:
    return subprocess.run(probe["exec"]["command"], cwd=ROOT, env=env, capture_output=True,
                          timeout=probe["timeoutSeconds"] + 30).returncode


def test_every_container_runs_its_own_command_and_passes_its_probes(tmp_path):
    env = pod_env(tmp_path)
    migrate = container("Job", "billing-migrate")
    done = subprocess.run(migrate["command"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr

    port = free_port()
    web = container("Deployment", "billing-web")
    web_argv = [part.replace("0.0.0.0:8000", f"127.0.0.1:{port}") for part in web["command"]]
    started = [Service("web", web_argv, env, tmp_path).start(),
               Service("worker", container("Deployment", "billing-worker")["command"], env,
                       tmp_path).start(),
               Service("beat", container("Deployment", "billing-beat")["command"], env,
                       tmp_path).start()]
    try:
        for probe in ("livenessProbe", "readinessProbe"):
            eventually(lambda p=web[probe]: http_probe(p, port), lambda s: s == 200, 90,
                       f"web's {probe}", started)
        for name in ("billing-worker", "billing-beat"):
            probe = container("Deployment", name)["livenessProbe"]
            eventually(lambda p=probe: exec_probe(p, env), lambda code: code == 0, 90,
                       f"{name}'s liveness probe", started)
        eventually(
            lambda: set(Dispatch.objects.filter(kind="scheduled", state="succeeded")
                        .values_list("task_name", flat=True)),
            lambda names: {"scheduling.expire_coupons", "monitoring.evaluate_alerts"} <= names,
            120, "scheduled jobs to run", started)
    finally:
        codes = {service.name: service.stop() for service in started}
    assert all(code in (0, None) for code in codes.values()), codes
