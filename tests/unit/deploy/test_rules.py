"""The shipped Prometheus rules: promtool checks them and runs their unit tests
(deploy/prometheus/tests/), and every burn-rate alternative of the reply SLO alerts needs a
minimum of judged spells in its long window (a quiet account cannot trip them)."""

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

PROM = Path(__file__).resolve().parents[3] / "deploy" / "prometheus"
needs_promtool = pytest.mark.skipif(shutil.which("promtool") is None, reason="Debian's prometheus is not installed")

#: alert -> the minimum of judged spells (met + breached) its long windows need
MINIMUM = {"SocialpulseReplySLOFastBurn": 10, "SocialpulseReplySLOSlowBurn": 100}


@needs_promtool
def test_promtool_checks_the_rules_and_passes_their_unit_tests():
    rules = sorted(map(str, (PROM / "rules").glob("*.yml")))
    checked = subprocess.run(["promtool", "check", "rules", *rules], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    tests = sorted(p.name for p in (PROM / "tests").glob("*.yml"))
    ran = subprocess.run(["promtool", "test", "rules", *tests], cwd=PROM / "tests", capture_output=True, text=True)
    assert ran.returncode == 0, ran.stdout + ran.stderr


def test_every_burn_rate_alternative_needs_the_minimum_of_judged_spells_in_its_long_window():
    groups = yaml.safe_load((PROM / "rules" / "replies.yml").read_text())["groups"]
    rules = {r.get("alert") or r["record"]: r for g in groups for r in g["rules"]}
    for alert, minimum in MINIMUM.items():
        alternatives = rules[alert]["expr"].split("\nor\n")
        assert len(alternatives) == 2, alert
        for alt in alternatives:
            windows = re.findall(r"reply_sla_error_ratio:rate(\w+)", alt)
            long = max(windows, key=lambda w: {"m": 60, "h": 3600, "d": 86400}[w[-1]] * int(w[:-1]))
            assert f"socialpulse:reply_sla_judged:increase{long} >= {minimum}" in alt, (alert, alt)
            judged = rules[f"socialpulse:reply_sla_judged:increase{long}"]["expr"]
            assert judged == f"sum by (platform, account, policy) (increase(socialpulse_reply_sla_total[{long}]))"
    # and the rule file says why, with the same numbers
    head = (PROM / "rules" / "replies.yml").read_text().split("groups:", 1)[0]
    assert "at least 10 judged" in head and "at least 100 judged" in head
