"""Static checks of docker/ that promtool and amtool do not cover (run by tests/run.sh).

- compose.yaml: every service has an image; the build context and Dockerfile exist; every
  bind-mounted path exists; named volumes are declared; depends_on names services; the
  services Prometheus, Grafana, custody and the witness address exist on the ports they listen on.
- Dockerfile: multi-stage, runs as a non-root user, COPY sources exist.
- Grafana: the datasource uid the dashboards use is provisioned, the provider path is where
  the dashboards are mounted, every panel has a query, and panel ids are unique.

Usage: check_docker.py DOCKER_DIR. Prints what it checked; exits 1 with every problem found.
"""

import json
import re
import sys
from pathlib import Path

import yaml

problems = []


def check(cond, message):
    if not cond:
        problems.append(message)


def main(docker: Path):
    repo = docker.parent
    compose = yaml.safe_load((docker / "compose.yaml").read_text())
    services = compose["services"]
    volumes = set((compose.get("volumes") or {}).keys())
    for name, svc in services.items():
        check("image" in svc, f"service {name}: no image")
        build = svc.get("build")
        if build:
            ctx = (docker / build["context"]).resolve()
            check(ctx.is_dir(), f"service {name}: build context {ctx} missing")
            check((ctx / build["dockerfile"]).is_file(), f"service {name}: Dockerfile missing")
        for v in svc.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("."):
                check((docker / src).exists(), f"service {name}: mounts missing {src}")
            else:
                check(src in volumes, f"service {name}: volume {src} not declared")
        deps = svc.get("depends_on", [])
        for dep in deps if isinstance(deps, list) else deps.keys():
            check(dep in services, f"service {name}: depends on unknown service {dep}")
    for needed in ["kafka", "custody", "witness", "prometheus", "alertmanager", "grafana"]:
        check(needed in services, f"compose: no {needed} service")

    custody_toml = (docker / "custody.toml").read_text()
    listen = re.search(r'^listen = "([^"]+)"', custody_toml, re.M)
    check(listen is not None, "custody.toml: no [serve] listen")
    port = listen.group(1).rsplit(":", 1)[1] if listen else "?"
    check(f"http://alertmanager:9093" in custody_toml, "custody.toml: alerts do not go to alertmanager")
    check(f"http://custody:{port}" in services["witness"]["command"], "witness: not pointed at custody's port")

    prom = yaml.safe_load((docker / "prometheus/prometheus.yml").read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    targets = [t for sc in jobs["custody"]["static_configs"] for t in sc["targets"]]
    check(targets == [f"custody:{port}"], f"prometheus: custody target {targets}, custody listens on {port}")
    am = [t for a in prom["alerting"]["alertmanagers"] for sc in a["static_configs"] for t in sc["targets"]]
    check(am == ["alertmanager:9093"], f"prometheus: alertmanager targets {am}")
    for pattern in prom["rule_files"]:
        check(list((docker / "prometheus").glob(pattern)), f"prometheus: no rule file matches {pattern}")

    dockerfile = (docker / "Dockerfile").read_text()
    stages = re.findall(r"^FROM ", dockerfile, re.M)
    check(len(stages) >= 2, "Dockerfile: not multi-stage")
    users = re.findall(r"^USER (\S+)", dockerfile, re.M)
    check(users and not users[-1].startswith(("root", "0")), f"Dockerfile: runs as {users}")
    for src in re.findall(r"^COPY (?!--from)(\S+) ", dockerfile, re.M):
        check((repo / src).exists(), f"Dockerfile: COPY source {src} missing")

    ds = yaml.safe_load((docker / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uids = {d["uid"] for d in ds["datasources"]}
    check(any(d["url"] == "http://prometheus:9090" for d in ds["datasources"]), "grafana: datasource url")
    prov = yaml.safe_load((docker / "grafana/provisioning/dashboards/custody.yml").read_text())
    mount = [v for v in services["grafana"]["volumes"] if v.startswith("./grafana/dashboards:")]
    check(mount and mount[0].split(":")[1] == prov["providers"][0]["options"]["path"],
          "grafana: dashboards provider path is not where they are mounted")
    dashboards = sorted((docker / "grafana/dashboards").glob("*.json"))
    check(dashboards, "grafana: no dashboards")
    titles = []
    for path in dashboards:
        dash = json.loads(path.read_text())
        ids = [p["id"] for p in dash["panels"]]
        check(len(ids) == len(set(ids)), f"{path.name}: duplicate panel ids")
        for p in dash["panels"]:
            if p["type"] == "row":
                continue
            titles.append(p["title"])
            check(p["datasource"]["uid"] in uids, f"{path.name}: panel {p['title']}: unknown datasource")
            check(p.get("targets") and all(t.get("expr") for t in p["targets"]),
                  f"{path.name}: panel {p['title']} has no query")
    for topic in ["lag", "freshness", "sla", "alert", "events in"]:
        check(any(topic in t.lower() for t in titles), f"grafana: no panel about {topic}")

    print(f"checked {len(services)} services, {len(jobs)} scrape jobs, {len(dashboards)} dashboard(s), "
          f"{len(titles)} panels")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main(Path(sys.argv[1]))
