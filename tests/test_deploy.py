"""The deployment files in deploy/ checked offline: the cluster-launcher config through Ray's own
validator (the installed Ray's schema and AWS defaults), the KubeRay / CronJob / RBAC manifests'
structure and cross-references, the Dockerfile's Ray version and install steps, the secret
fetcher, the weekly launcher's script (against a fake kubectl), and that no token is in deploy/."""

from __future__ import annotations

import copy
import os
import re
import shlex
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
KUBERAY = DEPLOY / "kuberay"
REPO_MOUNT = "/home/ray/hubscan"  # where the image installs the repo and the launcher mounts it


def _load(path: Path):
    return yaml.safe_load(path.read_text())


def _docs(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _one(docs: list[dict], kind: str) -> dict:
    found = [d for d in docs if d.get("kind") == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def _survey_args(command: str) -> tuple[list[str], list[str]]:
    """(words before jobs/survey.py, the survey's own arguments) of a command line."""
    words = shlex.split(command)
    i = next(i for i, w in enumerate(words) if w.endswith("jobs/survey.py"))
    return words[: i + 1], words[i + 1:]


def _parse_survey(args: list[str]):
    from hubscan.cli import build_parser
    return build_parser().parse_args(["survey", *args])


# --------------------------------------------------------------------------- cluster launcher

@pytest.fixture(scope="module")
def cluster() -> dict:
    return _load(DEPLOY / "cluster.yaml")


@pytest.fixture(scope="module")
def prepared(cluster) -> dict:
    from ray.autoscaler._private.util import prepare_config, validate_config
    config = prepare_config(copy.deepcopy(cluster))
    validate_config(config)  # ray-schema.json (jsonschema) + Ray's own consistency checks
    return config


def test_cluster_yaml_passes_rays_validator(cluster, prepared):
    assert cluster["cluster_name"] == "hubscan"
    assert cluster["provider"]["type"] == "aws"
    assert isinstance(cluster["provider"]["region"], str) and cluster["provider"]["region"]
    assert isinstance(cluster["idle_timeout_minutes"], int) and cluster["idle_timeout_minutes"] > 0
    # our values survive the merge with the provider defaults
    assert prepared["max_workers"] == cluster["max_workers"] == 8
    assert prepared["available_node_types"].keys() == cluster["available_node_types"].keys()


def test_cluster_node_types(prepared):
    types = prepared["available_node_types"]
    head = types[prepared["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert head["resources"].get("CPU", 0) <= 2  # no (or few) CPU slots: actors go to workers
    assert head["max_workers"] == 0
    workers = {k: v for k, v in types.items() if k != prepared["head_node_type"]}
    gpu = [v for v in workers.values() if v["resources"].get("GPU", 0) >= 1]
    assert len(gpu) == 1, "exactly one GPU worker type"
    worker = gpu[0]
    assert worker["min_workers"] == 0
    assert worker["max_workers"] == 8 <= prepared["max_workers"]
    assert worker["resources"]["CPU"] >= 1
    assert re.fullmatch(r"(g5|g6|g6e|g4dn|p3|p4d|p5)\.\w+", worker["node_config"]["InstanceType"])
    for t in types.values():  # every node type brings its own instance role (workers write to S3)
        assert t["node_config"]["IamInstanceProfile"]["Arn"].startswith("arn:aws:iam::")


def test_cluster_flags_in_usage_fit_the_workers(cluster):
    text = (DEPLOY / "cluster.yaml").read_text()
    worker = cluster["available_node_types"]["ray.worker.gpu"]
    actors = [int(n) for n in re.findall(r"--actors (\d+)", text)]
    cpus = [float(n) for n in re.findall(r"--cpus-per-actor (\d+)", text)]
    assert actors and cpus
    assert max(actors) <= worker["max_workers"]
    assert max(cpus) <= worker["resources"]["CPU"]
    assert re.search(r"ray up deploy/cluster\.yaml", text)
    assert re.search(r"ray submit .*deploy/cluster\.yaml jobs/survey\.py -- ", text)
    assert "ray job submit" in text


def test_cluster_docker_image_and_setup(cluster, prepared):
    docker = cluster["docker"]
    assert docker["image"].endswith("hubscan:latest")
    assert docker["container_name"]
    # the token mode is set container-wide, identically on head and workers
    assert "--env RAY_AUTH_MODE=token" in docker["run_options"]
    for key in ("head_setup_commands", "worker_setup_commands"):
        cmds = prepared[key]
        installs = [c for c in cmds if re.search(r"pip install .*-e \"?" + re.escape(REPO_MOUNT), c)]
        assert installs, f"{key} must install hubscan from {REPO_MOUNT}"
        assert all("hubscan-constraints.txt" in c for c in installs)
        assert any("deploy/fetch_secrets.py" in c for c in cmds)
    # the worker joins the head started on 6379
    assert any("ray start --head --port=6379" in c for c in prepared["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP:6379" in c for c in prepared["worker_start_ray_commands"])


def test_cluster_file_mounts_exist(cluster):
    mounts = cluster["file_mounts"]
    assert mounts, "the repository is mounted"
    for remote, local in mounts.items():
        src = (ROOT / os.path.expanduser(local)).resolve()
        assert src.exists(), f"file_mounts source {local!r} missing from the repo"
        assert ROOT == src or ROOT in src.parents, f"{local!r} is outside the repo"
    assert (ROOT / mounts[REPO_MOUNT]).resolve() == ROOT
    for rel in ("jobs/survey.py", "pyproject.toml", "deploy/fetch_secrets.py"):
        assert (ROOT / mounts[REPO_MOUNT] / rel).is_file()
    assert any(".venv" in e for e in cluster["rsync_exclude"])


def test_cluster_docker_run_command_builds(cluster, prepared):
    """Ray's own docker-run builder accepts the run options (no Docker needed)."""
    from ray.autoscaler._private.docker import docker_start_cmds
    cmd = docker_start_cmds("ubuntu", prepared["docker"]["image"], {REPO_MOUNT: REPO_MOUNT}, "ray_container",
                            prepared["docker"]["run_options"], "hubscan", "/home/ray", "docker")
    assert "RAY_AUTH_MODE=token" in cmd and f":{REPO_MOUNT}" in cmd and cmd.rstrip().endswith("bash")


# --------------------------------------------------------------------------- Dockerfile

@pytest.fixture(scope="module")
def dockerfile() -> str:
    return (DEPLOY / "Dockerfile").read_text()


def _instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with line continuations joined and comments dropped."""
    out, buf = [], ""
    for line in text.splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        buf += line.rstrip("\\").rstrip() + " " if line.rstrip().endswith("\\") else line
        if not line.rstrip().endswith("\\"):
            word, _, rest = buf.strip().partition(" ")
            out.append((word.upper(), rest.strip()))
            buf = ""
    return out


def test_dockerfile_base_is_rays_image_at_installed_version(dockerfile):
    import ray
    froms = [a for i, a in _instructions(dockerfile) if i == "FROM"]
    assert len(froms) == 1
    m = re.fullmatch(r"rayproject/ray:(\d+\.\d+\.\d+)-py311-(gpu|cu\d+)", froms[0])
    assert m, froms[0]
    assert m.group(1) == ray.__version__
    # the constraints that later installs honour pin the same Ray
    assert f"ray=={ray.__version__}" in dockerfile


def test_dockerfile_installs_hubscan_and_pinned_torch(dockerfile):
    ins = _instructions(dockerfile)
    setup = (ROOT / "scripts" / "setup.sh").read_text()
    torch_pin = re.search(r'"torch==([\w.]+)"', setup).group(1)
    vision_pin = re.search(r'"torchvision==([\w.]+)"', setup).group(1)
    assert f"ARG TORCH_VERSION={torch_pin}" in dockerfile
    assert f"ARG TORCHVISION_VERSION={vision_pin}" in dockerfile
    copies = [a for i, a in ins if i == "COPY"]
    assert any(re.fullmatch(r"(--chown=\S+ )?\. " + re.escape(REPO_MOUNT), c) for c in copies)
    runs = [a for i, a in ins if i == "RUN"]
    assert any(re.search(r"pip install .*-e \"?" + re.escape(REPO_MOUNT), r) for r in runs)
    assert any("torch==${TORCH_VERSION}" in r for r in runs)
    envs = " ".join(a for i, a in ins if i == "ENV")
    assert "HF_HUB_DISABLE_TELEMETRY=1" in envs
    users = [a for i, a in ins if i == "USER"]
    assert users and users[-1] in ("ray", "1000"), "runs as Ray's non-root user"
    for i, a in ins:  # no secret baked in
        if i in ("ENV", "ARG"):
            assert not re.search(r"HF_TOKEN|RAY_AUTH_TOKEN|AWS_SECRET|AWS_ACCESS", a), a
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def test_dockerfile_dependency_list_reads_pyproject(dockerfile, tmp_path):
    """The RUN that lists hubscan's dependencies from pyproject.toml works on this pyproject."""
    code = re.search(r'python -c "(import tomllib;.*?)"\s', dockerfile).group(1)
    code = code.replace(f"{REPO_MOUNT}/pyproject.toml", str(ROOT / "pyproject.toml"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    reqs = out.split()
    assert any(r.startswith("torch") for r in reqs) and any(r.startswith("ray") for r in reqs)
    assert any(r.startswith("onnx") for r in reqs)  # the formats extra


# --------------------------------------------------------------------------- KubeRay

@pytest.fixture(scope="module")
def rayjob() -> dict:
    docs = _docs(KUBERAY / "rayjob.yaml")
    return _one(docs, "RayJob")


@pytest.fixture(scope="module")
def rbac() -> list[dict]:
    return _docs(KUBERAY / "rbac.yaml")


@pytest.fixture(scope="module")
def cron_docs() -> list[dict]:
    return _docs(KUBERAY / "cronjob.yaml")


def _ray_containers(job: dict):
    spec = job["spec"]["rayClusterSpec"]
    yield "head", spec["headGroupSpec"]["template"]["spec"]
    for g in spec["workerGroupSpecs"]:
        yield g["groupName"], g["template"]["spec"]


def test_rayjob_structure(rayjob, cluster):
    import ray
    assert rayjob["apiVersion"] == "ray.io/v1"
    spec = rayjob["spec"]
    assert spec["shutdownAfterJobFinishes"] is True
    assert isinstance(spec["ttlSecondsAfterFinished"], int) and spec["ttlSecondsAfterFinished"] >= 0
    cs = spec["rayClusterSpec"]
    assert cs["rayVersion"] == ray.__version__
    assert cs["enableInTreeAutoscaling"] is True
    assert str(cs["headGroupSpec"]["rayStartParams"]["num-cpus"]) == "0"
    for _, pod in _ray_containers(rayjob):
        for c in pod["containers"]:
            assert c["image"] == cluster["docker"]["image"], "same image as the cluster launcher"


def test_rayjob_entrypoint_runs_the_survey(rayjob):
    before, args = _survey_args(rayjob["spec"]["entrypoint"])
    assert before == ["python", f"{REPO_MOUNT}/jobs/survey.py"]
    ns = _parse_survey(args)  # hubscan's own parser accepts every flag
    assert ns.source == "hf" and ns.filter == "timm" and ns.limit == 1000
    assert ns.out.startswith("s3://")
    workers = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert ns.gpus_per_actor == 1
    assert ns.actors <= sum(g["maxReplicas"] for g in workers)
    cpu_limit = float(workers[0]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"])
    assert ns.cpus_per_actor <= cpu_limit


def test_rayjob_gpu_workers(rayjob):
    groups = rayjob["spec"]["rayClusterSpec"]["workerGroupSpecs"]
    assert groups
    for g in groups:
        assert g["minReplicas"] == 0 and g["maxReplicas"] >= 1
        for c in g["template"]["spec"]["containers"]:
            assert int(c["resources"]["limits"]["nvidia.com/gpu"]) >= 1
    head = rayjob["spec"]["rayClusterSpec"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert "nvidia.com/gpu" not in head.get("resources", {}).get("limits", {})


def test_rayjob_secrets_and_identity(rayjob, rbac):
    sa = {d["metadata"]["name"]: d for d in rbac if d["kind"] == "ServiceAccount"}
    for group, pod in _ray_containers(rayjob):
        assert pod["serviceAccountName"] in sa, group
        assert "eks.amazonaws.com/role-arn" in sa[pod["serviceAccountName"]]["metadata"]["annotations"]
        for c in pod["containers"]:
            env = {e["name"]: e for e in c.get("env", [])}
            assert "secretKeyRef" in env["HF_TOKEN"]["valueFrom"], f"{group}: HF_TOKEN from a Secret"
            assert "value" not in env["HF_TOKEN"]
    auth = rayjob["spec"]["rayClusterSpec"].get("authOptions", {}).get("mode")
    if auth is None:  # without KubeRay's authOptions, RAY_AUTH_MODE must be set on every container
        for _, pod in _ray_containers(rayjob):
            for c in pod["containers"]:
                assert {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN"} <= {e["name"] for e in c.get("env", [])}
    else:
        assert auth == "token"


def test_rbac_lets_the_launcher_create_rayjobs(rbac, cron_docs, rayjob):
    ns = rayjob["metadata"]["namespace"]
    assert _one(rbac, "Namespace")["metadata"]["name"] == ns
    role = _one(rbac, "Role")
    binding = _one(rbac, "RoleBinding")
    assert role["apiVersion"] == binding["apiVersion"] == "rbac.authorization.k8s.io/v1"
    rule = next(r for r in role["rules"] if "rayjobs" in r["resources"])
    assert rule["apiGroups"] == ["ray.io"]
    assert {"create", "get", "list"} <= set(rule["verbs"])
    assert binding["roleRef"]["name"] == role["metadata"]["name"]
    cron = _one(cron_docs, "CronJob")
    pod = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    assert {"kind": "ServiceAccount", "name": pod["serviceAccountName"], "namespace": ns} in binding["subjects"]
    for d in rbac + cron_docs:
        if d["kind"] != "Namespace":
            assert d["metadata"]["namespace"] == ns


def test_cronjob_creates_the_same_rayjob(cron_docs, rayjob):
    cron = _one(cron_docs, "CronJob")
    assert cron["apiVersion"] == "batch/v1"
    spec = cron["spec"]
    assert spec["concurrencyPolicy"] == "Forbid"
    fields = spec["schedule"].split()
    assert len(fields) == 5 and fields[2] == "*" and fields[3] == "*" and fields[4] != "*", "weekly"
    cm = _one(cron_docs, "ConfigMap")
    embedded = yaml.safe_load(cm["data"]["rayjob.yaml"])
    assert embedded["apiVersion"] == rayjob["apiVersion"] and embedded["kind"] == "RayJob"
    assert "name" not in embedded["metadata"], "a generated name, so weekly runs don't collide"
    assert embedded["metadata"]["generateName"].startswith(rayjob["metadata"]["name"])
    assert embedded["metadata"]["labels"] == rayjob["metadata"]["labels"]
    assert embedded["metadata"]["namespace"] == rayjob["metadata"]["namespace"]
    assert embedded["spec"] == rayjob["spec"], "cronjob.yaml's RayJob differs from rayjob.yaml"
    # the launcher pod runs the ConfigMap's script, which `kubectl create -f`s the RayJob
    pod = spec["jobTemplate"]["spec"]["template"]["spec"]
    vol = next(v for v in pod["volumes"] if v.get("configMap", {}).get("name") == cm["metadata"]["name"])
    c = pod["containers"][0]
    mount = next(m for m in c["volumeMounts"] if m["name"] == vol["name"])["mountPath"]
    assert c["command"][-1] == f"{mount}/launch.sh"
    assert f"kubectl create -f {mount}/rayjob.yaml" in cm["data"]["launch.sh"]
    selector = re.search(r"selector=(\S+)", cm["data"]["launch.sh"]).group(1)
    key, value = selector.split("=")
    assert embedded["metadata"]["labels"][key] == value


FAKE_KUBECTL = """\
#!{python}
import json, os, sys
state_file = os.environ["FAKE_STATE"]
st = json.load(open(state_file))
args = sys.argv[1:]
st["calls"].append(args)
out = ""
if args[:2] == ["get", "rayjobs"]:
    out = None if st["existing"] is None else "".join(f"{{n}} {{s}}\\n" for n, s in st["existing"])
elif args[0] == "create":
    out = "rayjob.ray.io/hubscan-survey-abcde\\n"
elif args[0] == "get":
    out = st["states"].pop(0) if len(st["states"]) > 1 else st["states"][0]
json.dump(st, open(state_file, "w"))
if out is None or out == "!error":
    sys.exit("error: the server is currently unable to handle the request")
sys.stdout.write(out)
"""


def _run_launcher(tmp_path, cron_docs, existing, states):
    import json
    script = _one(cron_docs, "ConfigMap")["data"]["launch.sh"]
    bindir = tmp_path / "bin"
    bindir.mkdir()
    kubectl = bindir / "kubectl"
    kubectl.write_text(FAKE_KUBECTL.format(python=sys.executable))
    kubectl.chmod(kubectl.stat().st_mode | stat.S_IXUSR)
    (tmp_path / "launch.sh").write_text(script)
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"calls": [], "existing": existing, "states": states}))
    env = {**os.environ, "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}", "FAKE_STATE": str(state),
           "POLL_SECONDS": "0"}
    proc = subprocess.run(["sh", str(tmp_path / "launch.sh")], env=env, capture_output=True, text=True,
                          timeout=60)
    return proc, json.loads(state.read_text())["calls"]


def test_launcher_creates_and_waits(tmp_path, cron_docs):
    proc, calls = _run_launcher(tmp_path, cron_docs, existing=[["hubscan-survey-old", "Complete"]],
                                states=["/", "Running/RUNNING", "!error", "Complete/SUCCEEDED"])
    assert proc.returncode == 0, proc.stderr
    assert ["create", "-f", "/etc/hubscan/rayjob.yaml", "-o", "name"] in calls
    assert calls[-1][:2] == ["get", "rayjob.ray.io/hubscan-survey-abcde"]
    assert "SUCCEEDED" in proc.stdout


def test_launcher_adopts_an_unfinished_survey(tmp_path, cron_docs):
    proc, calls = _run_launcher(tmp_path, cron_docs,
                                existing=[["hubscan-survey-old", "Complete"], ["hubscan-survey-live", "Running"]],
                                states=["Complete/FAILED"])
    assert proc.returncode == 1
    assert not any(c[0] == "create" for c in calls), "no second survey while one is running"
    assert ["get", "rayjob.ray.io/hubscan-survey-live"] == calls[-1][:2]
    assert "FAILED" in proc.stderr


def test_launcher_creates_nothing_when_it_cannot_list(tmp_path, cron_docs):
    proc, calls = _run_launcher(tmp_path, cron_docs, existing=None, states=["/"])
    assert proc.returncode != 0
    assert not any(c[0] == "create" for c in calls)


# --------------------------------------------------------------------------- secrets

def test_no_literal_secrets_in_deploy():
    patterns = {
        "Hugging Face token": re.compile(r"\bhf_[A-Za-z0-9]{20,}"),
        "AWS access key id": re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
        "AWS secret key": re.compile(r"aws_secret_access_key\s*[:=]", re.I),
        "private key": re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    }
    files = [p for p in DEPLOY.rglob("*") if p.is_file()]
    assert len(files) >= 8
    for path in files:
        text = path.read_text(errors="replace")
        for what, pat in patterns.items():
            assert not pat.search(text), f"{what} in {path.relative_to(ROOT)}"
        assert not re.search(r"name:\s*HF_TOKEN\s*\n\s*value:", text), f"literal HF_TOKEN in {path}"


def test_fetch_secrets_writes_private_files(tmp_path, monkeypatch):
    sys.path.insert(0, str(DEPLOY))
    try:
        import fetch_secrets
    finally:
        sys.path.remove(str(DEPLOY))
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("HF_TOKEN_PATH", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)

    class NotFound(Exception):
        pass

    class FakeSSM:
        exceptions = type("E", (), {"ParameterNotFound": NotFound})

        def __init__(self, values):
            self.values = values

        def get_parameter(self, Name, WithDecryption):
            assert WithDecryption is True
            if Name not in self.values:
                raise NotFound(Name)
            return {"Parameter": {"Value": self.values[Name]}}

    ray_token = "test-ray-token-0123"
    assert fetch_secrets.fetch(FakeSSM({"/hubscan/ray-auth-token": ray_token + "\n"})) == 0
    tok = tmp_path / ".ray" / "auth_token"
    assert tok.read_text() == ray_token
    assert stat.S_IMODE(tok.stat().st_mode) == 0o600
    assert not (tmp_path / ".cache" / "huggingface" / "token").exists()  # optional, absent: skipped

    assert fetch_secrets.fetch(FakeSSM({"/x/ray-auth-token": "r", "/x/hf-token": "h"}), prefix="x") == 0
    hf = tmp_path / ".cache" / "huggingface" / "token"
    assert hf.read_text() == "h" and stat.S_IMODE(hf.stat().st_mode) == 0o600

    assert fetch_secrets.fetch(FakeSSM({})) == 1  # the Ray token is required


def test_readme_commands_use_real_flags():
    text = (DEPLOY / "README.md").read_text()
    joined = re.sub(r"\\\n\s*", " ", text)
    cmds = [l for l in joined.splitlines() if "jobs/survey.py" in l and "--out" in l]
    assert cmds
    for line in cmds:
        _, args = _survey_args(line)
        _parse_survey([a for a in args if a != "--"])
    for line in joined.splitlines():
        if line.startswith("hubscan sql"):
            from hubscan.cli import build_parser
            ns = build_parser().parse_args(shlex.split(line)[1:])
            assert ns.dataset.startswith("s3://")
