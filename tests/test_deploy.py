"""The container files: the Dockerfile runs the install script that CI runs in a fresh venv, as a non-root user
with a health check; compose runs ≥ 2 replicas behind the proxy; the proxy configuration is valid HAProxy
(Debian's ``haproxy -c``) with cookie stickiness and the health check. No container runtime is needed."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def instructions() -> list[tuple[str, str]]:
    text = (REPO / "Dockerfile").read_text().replace("\\\n", " ")
    return [(m.group(1).upper(), m.group(2).strip()) for m in re.finditer(r"^([A-Za-z]+)\s+(.*)$", text, re.M)
            if not m.group(0).lstrip().startswith("#")]


def test_dockerfile_installs_with_the_ci_script_as_a_non_root_user():
    steps = instructions()
    assert steps[0] == ("FROM", "python:3.11-slim")
    runs = [arg for op, arg in steps if op == "RUN"]
    assert "sh deploy/install_app.sh" in runs
    users = [arg for op, arg in steps if op == "USER"]
    assert users and users[-1] not in ("root", "0")
    assert [op for op, _ in steps].index("USER") < [arg for _, arg in steps].index("sh deploy/install_app.sh")
    (health,) = [arg for op, arg in steps if op == "HEALTHCHECK"]
    assert "/_stcore/health" in health and "8501" in health
    (cmd,) = [arg for op, arg in steps if op == "CMD"]
    assert "streamlit" in cmd and "streamlit_app.py" in cmd and "--server.address=0.0.0.0" in cmd
    ci = (REPO / ".ci" / "run").read_text()
    assert "deploy/install_app.sh" in ci  # the script is exercised in a fresh venv on every CI run
    assert 'pip install --no-cache-dir -q -e ".[app]"' in (REPO / "deploy" / "install_app.sh").read_text()
    ignored = (REPO / ".dockerignore").read_text().split()
    assert "reports" not in ignored and "weights" not in ignored  # the model report page and the models ship


def test_compose_runs_replicas_behind_the_sticky_proxy():
    compose = yaml.safe_load((REPO / "compose.yaml").read_text())
    app, proxy = compose["services"]["app"], compose["services"]["proxy"]
    assert app["build"] == "." and app["deploy"]["replicas"] >= 2 and "ports" not in app  # only the proxy is public
    assert any(v.startswith("./deploy/haproxy.cfg:") for v in proxy["volumes"])
    cfg = (REPO / "deploy" / "haproxy.cfg").read_text()
    assert re.search(r"^\s*cookie \S+ insert .*dynamic", cfg, re.M) and "dynamic-cookie-key" in cfg
    assert "httpchk GET /_stcore/health" in cfg and "timeout tunnel" in cfg
    assert re.search(r"server-template \S+ \S+ app:8501 .*resolvers docker", cfg)


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="apt-get install haproxy (syntax check of the proxy)")
def test_haproxy_accepts_the_configuration(tmp_path):
    ok = subprocess.run(["haproxy", "-c", "-f", str(REPO / "deploy" / "haproxy.cfg")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    broken = tmp_path / "broken.cfg"
    broken.write_text((REPO / "deploy" / "haproxy.cfg").read_text().replace("balance roundrobin", "balance nosuch"))
    bad = subprocess.run(["haproxy", "-c", "-f", str(broken)], capture_output=True, text=True)
    assert bad.returncode != 0  # the check is real: a wrong keyword fails it
