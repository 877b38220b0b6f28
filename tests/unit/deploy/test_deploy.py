"""Kubernetes manifests, validated with a real validator (kubernetes-validate, strict)."""

import subprocess
import sys
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
CORE = ["configmap.yaml", "secret.yaml", "service.yaml", "statefulset.yaml", "pdb.yaml"]
VALIDATE = str(Path(sys.executable).parent / "kubernetes-validate")


def test_core_manifests_pass_strict_validation():
    result = subprocess.run([VALIDATE, "--strict", "--quiet", *[str(K8S / f) for f in CORE]], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_a_broken_statefulset(tmp_path):
    doc = yaml.safe_load((K8S / "statefulset.yaml").read_text())
    doc["spec"]["replicas"] = "three"
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(doc))
    assert subprocess.run([VALIDATE, "--strict", "--quiet", str(bad)], capture_output=True).returncode != 0


def test_workers_probe_readyz_and_healthz_and_keep_a_data_dir():
    sts = yaml.safe_load((K8S / "statefulset.yaml").read_text())
    c = sts["spec"]["template"]["spec"]["containers"][0]
    assert c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert {v["mountPath"] for v in c["volumeMounts"]} >= {"/data"}
    assert sts["spec"]["volumeClaimTemplates"][0]["metadata"]["name"] == "data"
    assert sts["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] >= 30
    kustom = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert set(kustom["resources"]) == {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
