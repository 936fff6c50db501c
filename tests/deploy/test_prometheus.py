"""deploy/prometheus: promtool accepts the scrape config and the alert rules, the rules' unit tests
pass, and every metric the rules and the scrape configs name is one the services export.

promtool comes from Debian's ``prometheus`` package (scripts/provision/prometheus.sh, run by
scripts/test.sh). Without it the promtool tests are skipped, except in CI, where they fail.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from shared.config import Settings
from shared.metrics import Metrics

ROOT = Path(__file__).resolve().parents[2]
PROM = ROOT / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")


def promtool(*args: str) -> str:
    if PROMTOOL is None:
        pytest.fail(
            "promtool is missing: scripts/provision/prometheus.sh (run by test.sh) installs it"
        )
    done = subprocess.run(
        [PROMTOOL, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout + done.stderr


def test_promtool_accepts_the_compose_scrape_config_and_its_rules() -> None:
    out = promtool("check", "config", "deploy/prometheus/prometheus.yml")
    assert "SUCCESS" in out


def test_promtool_accepts_the_rules() -> None:
    assert "SUCCESS" in promtool("check", "rules", "deploy/prometheus/rules.yml")


def test_the_alert_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in promtool("test", "rules", "deploy/prometheus/rules_test.yml")


def test_every_alert_has_a_unit_test_and_a_runbook_entry() -> None:
    rules = yaml.safe_load((PROM / "rules.yml").read_text())
    alerts = {r["alert"] for g in rules["groups"] for r in g["rules"]}
    tests = yaml.safe_load((PROM / "rules_test.yml").read_text())["tests"]
    tested = {t["alertname"] for case in tests for t in case["alert_rule_test"] if t["exp_alerts"]}
    assert alerts == tested
    doc = (ROOT / "docs" / "OBSERVABILITY.md").read_text()
    for alert in alerts:
        assert f"| `{alert}` |" in doc, alert


def exported_names() -> set[str]:
    """Every sample name the services can export (histograms' and counters' suffixes too)."""
    metrics = Metrics()
    names = {
        s.name
        for f in text_string_to_metric_families(metrics.exposition().decode())
        for s in f.samples
    }
    families = {f.name for f in text_string_to_metric_families(metrics.exposition().decode())}
    for family in families:  # label-only families have no sample until first use
        names |= {family, f"{family}_total", f"{family}_bucket", f"{family}_sum", f"{family}_count"}
    return names | {"up"}


def test_every_metric_the_rules_name_is_exported() -> None:
    rules = yaml.safe_load((PROM / "rules.yml").read_text())
    named = set()
    for group in rules["groups"]:
        for rule in group["rules"]:
            named |= set(re.findall(r"\b(autoscorer_[a-z_]+|up)\b", rule["expr"]))
    assert named
    assert named <= exported_names(), named - exported_names()


def test_the_compose_scrape_targets_are_the_ports_the_compose_settings_open() -> None:
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    [job] = config["scrape_configs"]
    targets = {c["labels"]["service"]: c["targets"][0] for c in job["static_configs"]}
    settings = Settings.model_validate(
        yaml.safe_load((ROOT / "deploy" / "config" / "compose.yaml").read_text())
    )
    ops = settings.ops_http
    assert targets == {
        "gateway": f"gateway:{settings.gateway.port}",
        "scheduler": f"scheduler:{ops.scheduler_port}",
        "executor": f"executor:{ops.executor_port}",
        "scorer": f"scorer:{ops.scorer_port}",
    }


def test_the_kubernetes_scrape_config_keeps_annotated_pods_at_their_port_and_path() -> None:
    config = yaml.safe_load((PROM / "prometheus-kubernetes.yml").read_text())
    [job] = config["scrape_configs"]
    pods = {"role": "pod", "namespaces": {"names": ["autoscorer"]}}
    assert job["kubernetes_sd_configs"] == [pods]
    relabel = {tuple(r["source_labels"]): r for r in job["relabel_configs"]}
    keep = relabel[("__meta_kubernetes_pod_annotation_prometheus_io_scrape",)]
    assert (keep["action"], keep["regex"]) == ("keep", "true")
    path = relabel[("__meta_kubernetes_pod_annotation_prometheus_io_path",)]
    assert path["target_label"] == "__metrics_path__"
    port = relabel[("__address__", "__meta_kubernetes_pod_annotation_prometheus_io_port")]
    # Prometheus joins source labels with ";" and anchors the regex
    rewritten = re.fullmatch(port["regex"], "10.1.2.3:8080;9101")
    assert rewritten is not None
    assert port["replacement"].replace("$1", rewritten[1]).replace("$2", rewritten[2]) == (
        "10.1.2.3:9101"
    )


DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "autoscorer.json"
GRAFANA = ROOT / "deploy" / "grafana" / "provisioning"


def panel_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [(p["title"], t["expr"]) for p in dashboard["panels"] for t in p["targets"]]


def test_every_dashboard_panel_queries_metrics_the_services_export() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["panels"]
    assert all(p["targets"] for p in dashboard["panels"])
    for title, expr in panel_queries():
        named = set(re.findall(r"\b(autoscorer_[a-z_]+|up)\b", expr))
        assert named, title
        assert named <= exported_names(), (title, named - exported_names())


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    """promtool parses each panel's query (wrapped as a recording rule)."""
    rules = [
        {"record": f"autoscorer:panel_{i}", "expr": expr}
        for i, (_, expr) in enumerate(panel_queries())
    ]
    file = tmp_path / "panels.yml"
    file.write_text(yaml.safe_dump({"groups": [{"name": "panels", "rules": rules}]}))
    assert "SUCCESS" in promtool("check", "rules", str(file))


def test_the_dashboard_reads_the_provisioned_datasource() -> None:
    [source] = yaml.safe_load((GRAFANA / "datasources" / "prometheus.yml").read_text())[
        "datasources"
    ]
    assert source["url"] == "http://prometheus:9090"
    dashboard = json.loads(DASHBOARD.read_text())
    for panel in dashboard["panels"]:
        assert panel["datasource"]["uid"] == source["uid"], panel["title"]


def test_compose_provisions_prometheus_and_grafana_from_these_files() -> None:
    services = yaml.safe_load((ROOT / "docker-compose.yml").read_text())["services"]
    prom_mounts = dict(v.split(":")[:2] for v in services["prometheus"]["volumes"])
    assert prom_mounts["./deploy/prometheus"] == "/etc/prometheus"
    assert "--config.file=/etc/prometheus/prometheus.yml" in services["prometheus"]["command"]
    grafana = dict(v.split(":")[:2] for v in services["grafana"]["volumes"] if v.startswith("./"))
    assert grafana["./deploy/grafana/provisioning"] == "/etc/grafana/provisioning"
    [provider] = yaml.safe_load((GRAFANA / "dashboards" / "autoscorer.yml").read_text())[
        "providers"
    ]
    assert grafana["./deploy/grafana/dashboards"] == provider["options"]["path"]
    for local in grafana:
        assert (ROOT / local).is_dir(), local
