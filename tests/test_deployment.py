"""`manage.py check_deployment`: the project's own compose file, Procfile and Kubernetes
manifests pass; broken variants fail with the right lines; the manifests are valid Kubernetes."""

import io
import json
import shutil
from pathlib import Path

import pytest
import yaml
from django.core.management import call_command
from django_celery_beat.models import IntervalSchedule, PeriodicTask

ROOT = Path(__file__).resolve().parents[1]
KUBERNETES = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.31"  # the API version the manifests are validated against

pytestmark = pytest.mark.django_db


def check(*args) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    try:
        call_command("check_deployment", *map(str, args), stdout=out, stderr=err)
        code = 0
    except SystemExit as exc:
        code = exc.code
    return code, out.getvalue(), err.getvalue()


def compose(tmp_path, edit) -> Path:
    document = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    edit(document["services"])
    path = tmp_path / "docker-compose.yml"
    path.write_text(yaml.safe_dump(document))
    return path


def test_the_projects_own_descriptions_pass():
    code, out, err = check()
    assert code == 0, out + err
    assert "docker-compose.yml:\n" in out and "Procfile:\n" in out
    assert "deploy/kubernetes:\n" in out
    assert ("expire-coupons (scheduling.expire_coupons -> queue celery): scheduled by "
            "docker-compose.yml:beat; consumed by docker-compose.yml:worker") in out
    assert "scheduled by deploy/kubernetes/beat.yaml:billing-beat/beat" in out


def test_no_beat_is_a_problem(tmp_path):
    path = compose(tmp_path, lambda services: services.pop("beat"))
    code, out, _ = check(path)
    assert code == 1
    assert f"{path}: no beat: the 7 enabled periodic job(s) are not scheduled" in out
    assert "scheduled by NOTHING" in out


def test_a_queue_nobody_consumes_is_named_with_its_jobs(tmp_path):
    every, _ = IntervalSchedule.objects.get_or_create(every=60, period="seconds")
    PeriodicTask.objects.create(name="monthly-report", task="scheduling.expire_coupons",
                                interval=every, queue="reports")
    code, out, _ = check(ROOT / "docker-compose.yml")
    assert code == 1
    assert ("docker-compose.yml: no worker consumes queue 'reports', used by monthly-report "
            "(start a worker with -Q reports)") in out
    path = compose(tmp_path, lambda s: s.setdefault("reports", {
        "command": ["celery", "-A", "project", "worker", "-Q", "reports"]}))
    assert check(path)[0] == 0  # a worker on that queue fixes it


def test_a_worker_with_an_embedded_beat_and_a_beat_without_the_lease(tmp_path):
    procfile = tmp_path / "Procfile"
    procfile.write_text(
        "web: gunicorn project.wsgi\n"
        "worker: celery -A project worker -B --loglevel=INFO\n"
        "beat: celery -A project beat -S django_celery_beat.schedulers:DatabaseScheduler\n")
    code, out, _ = check(procfile)
    assert code == 1
    assert f"{procfile}:worker: worker runs an embedded beat (-B/--beat)" in out
    assert (f"{procfile}:beat: beat uses scheduler "
            "'django_celery_beat.schedulers:DatabaseScheduler', without the lease") in out


def test_a_kubernetes_beat_without_a_liveness_probe(tmp_path):
    folder = tmp_path / "kubernetes"
    shutil.copytree(KUBERNETES, folder)
    beat = list(yaml.safe_load_all((folder / "beat.yaml").read_text()))
    del beat[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]
    (folder / "beat.yaml").write_text(yaml.safe_dump_all(beat))
    code, out, _ = check(folder)
    assert code == 1
    assert f"{folder}/beat.yaml:billing-beat/beat: beat has no liveness probe" in out


def test_json_output_and_bad_usage(tmp_path):
    code, out, _ = check("--json", ROOT / "Procfile")
    assert code == 0
    result = json.loads(out)
    assert result["status"] == "ok" and result["problems"] == []
    (row,) = [r for r in result["descriptions"]["Procfile"] if r["job"] == "expire-coupons"]
    assert row["scheduled_by"] == ["Procfile:beat"] and row["consumed_by"] == ["Procfile:worker"]
    assert check(tmp_path / "missing.yml")[0] == 2
    broken = tmp_path / "broken.yml"
    broken.write_text("services: [\n")
    code, _, err = check(broken)
    assert code == 2 and err.startswith(f"error: {broken}: not valid YAML")
    quotes = tmp_path / "Procfile"
    quotes.write_text("worker: celery -A project worker -Q 'reports\n")  # unbalanced quote
    code, _, err = check(quotes)
    assert code == 2 and err.startswith(f"error: {quotes}: not a description this can read")
    odd = tmp_path / "odd.yaml"
    odd.write_text("kind: Deployment\nspec: {template: {spec: {containers: [just-a-string]}}}\n")
    assert check(odd)[0] == 2


def test_the_kubernetes_manifests_are_valid_against_the_schemas():
    import kubernetes_validate

    kinds = []
    for manifest in sorted(KUBERNETES.glob("*.yaml")):
        for document in yaml.safe_load_all(manifest.read_text()):
            if document["kind"] == "Kustomization":
                listed = set(document["resources"])
                continue
            kubernetes_validate.validate(document, KUBERNETES_VERSION, strict=True)
            kinds.append(document["kind"])
    assert listed == {p.name for p in KUBERNETES.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kinds) == sorted([
        "Namespace", "ConfigMap", "Secret", "Job", "Deployment", "Service", "Deployment",
        "HorizontalPodAutoscaler", "Deployment", "PodDisruptionBudget"])
    beat = next(yaml.safe_load_all((KUBERNETES / "beat.yaml").read_text()))
    assert beat["spec"]["replicas"] == 2  # the lease makes the second a hot standby
