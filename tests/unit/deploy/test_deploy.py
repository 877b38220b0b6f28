"""Kubernetes manifests, validated with a real validator (kubernetes-validate, strict)."""

import subprocess
import sys
from pathlib import Path

import yaml

K8S = Path(__file__).resolve().parents[3] / "deploy" / "kubernetes"
CORE = ["configmap.yaml", "secret.yaml", "service.yaml", "statefulset.yaml", "pdb.yaml", "networkpolicy.yaml"]
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


def test_the_web_port_is_secured_reached_by_prometheus_and_peers_only_and_scraped_with_credentials():
    config = yaml.safe_load((K8S / "configmap.yaml").read_text())["data"]
    secrets = {d["metadata"]["name"]: d for d in yaml.safe_load_all((K8S / "secret.yaml").read_text())}
    web = yaml.safe_load(secrets["socialpulse-web"]["stringData"]["web.config.yml"])
    assert config["SOCIALPULSE_WEB_CONFIG"] == "/etc/socialpulse/web/web.config.yml"
    assert web["tls_server_config"]["cert_file"].startswith("/etc/socialpulse/web/") and web["basic_auth_users"]
    sts = yaml.safe_load((K8S / "statefulset.yaml").read_text())["spec"]["template"]["spec"]
    mounts = {m["name"]: m["mountPath"] for m in sts["containers"][0]["volumeMounts"]}
    assert mounts["web"] == "/etc/socialpulse/web"
    assert {s["secret"]["name"] for s in next(v for v in sts["volumes"] if v["name"] == "web")["projected"]["sources"]} \
        == {"socialpulse-web", "socialpulse-web-tls"}
    assert sts["containers"][0]["readinessProbe"]["httpGet"]["scheme"] == "HTTPS"
    policy = yaml.safe_load((K8S / "networkpolicy.yaml").read_text())["spec"]
    assert policy["policyTypes"] == ["Ingress"] and len(policy["ingress"]) == 1
    rule = policy["ingress"][0]
    assert rule["ports"] == [{"protocol": "TCP", "port": 6066}]
    assert rule["from"] == [
        {"podSelector": {"matchLabels": {"app.kubernetes.io/name": "socialpulse"}}},
        {"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}},
         "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}},
    ]
    endpoint = yaml.safe_load((K8S / "prometheus-scrape.yaml").read_text())["spec"]["podMetricsEndpoints"][0]
    assert endpoint["scheme"] == "https" and endpoint["basicAuth"]["password"]["name"] == "socialpulse-scrape"
    assert endpoint["tlsConfig"]["ca"]["secret"] == {"name": "socialpulse-scrape", "key": "ca.crt"}
    assert set(secrets["socialpulse-scrape"]["stringData"]) == {"username", "password", "ca.crt"}
