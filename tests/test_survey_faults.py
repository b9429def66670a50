"""Fault tolerance of the survey on a multi-node ``ray.cluster_utils.Cluster`` and local Ray:
a node removed mid-run, an actor process killed, the driver killed and rerun; ``ray job submit``
of ``jobs/survey.py`` to a head node started by the test. Every model must end in exactly one row."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from hubscan.survey import SurveyConfig, survey  # noqa: E402
from test_survey import q  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
N_SLOW = 6
# every model committed as it finishes (--flush-models 1), so that faults strike between commits;
# tests/test_store_s3.py kills an actor and the driver with several models per data file


@pytest.fixture(scope="module")
def slow_hub(tmp_path_factory) -> Path:
    """Models that take a few seconds each on one core (a 3500 × 3500 heavy-tailed matrix: ~3 s; 2500 × 2500
    took 1.1 s once the analysis got faster, and a survey of six could end before a signal sent after its
    first commit was handled), so that models are in flight when a node, an actor or the driver is killed."""
    root = tmp_path_factory.mktemp("slowhub")
    rng = np.random.default_rng(0)
    for i in range(N_SLOW):
        w = torch.from_numpy(rng.standard_t(3, size=(3500, 3500)).astype(np.float32))
        save_file({"layer.weight": w, "layer.bias": torch.zeros(3500)}, str(root / f"slow{i}.safetensors"))
    return root


def wait_for(pred, timeout=120, step=0.2):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return True
        time.sleep(step)
    raise TimeoutError("condition not reached")


def n_models(out: Path) -> int:
    """Models committed to the dataset (the done-set)."""
    from hubscan.store import Dataset
    return len(Dataset(str(out), create=False).done())


def run_in_thread(cfg):
    box = {}

    def target():
        try:
            box["summary"] = survey(cfg)
        except BaseException as e:  # noqa: BLE001
            box["error"] = e
    th = threading.Thread(target=target, daemon=True)
    th.start()
    return th, box


def assert_one_row_each(out: Path, n: int):
    assert q(out, "SELECT count(*), count(DISTINCT model_key), count(*) FILTER (WHERE status = 'success') "
                  "FROM models") == [(n, n, n)]
    assert q(out, "SELECT count(DISTINCT model_key) FROM layers") == [(n,)]
    # no layer row twice (a retried or re-run model replaces its file)
    assert q(out, "SELECT count(*) FROM (SELECT model_key, layer_id, part, count(*) AS c FROM layers "
                  "GROUP BY ALL HAVING c > 1)") == [(0,)]


def test_node_lost_mid_run_loses_no_model(slow_hub, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "include_dashboard": False})
    victim = cluster.add_node(num_cpus=1)
    cluster.add_node(num_cpus=1)
    try:
        ray.init(address=cluster.address, log_to_driver=False)
        out = tmp_path / "ds"
        th, box = run_in_thread(SurveyConfig(source=f"local:{slow_hub}", out=str(out), actors=2, cpus_per_actor=1,
                                             progress=False, max_in_flight=2,
                                             flush_models=1))
        wait_for(lambda: n_models(out) >= 1)
        cluster.remove_node(victim)  # its actor dies with the model it was analyzing
        cluster.add_node(num_cpus=1)  # the autoscaler's replacement (the survey also finishes without it)
        th.join(timeout=600)
        assert "error" not in box, box.get("error")
        assert box["summary"]["num_success"] == N_SLOW
        assert_one_row_each(out, N_SLOW)
        assert q(out, "SELECT max(attempts) FROM models")[0][0] >= 2  # the lost node's model was retried
    finally:
        ray.shutdown()
        cluster.shutdown()


def _actor_pids(root: int | None = None):
    """The analysis actors under process ``root`` (default: this one) — the machine is shared."""
    import psutil
    out = []
    for p in psutil.Process(root).children(recursive=True):
        try:
            if any("_Worker" in part for part in p.cmdline()):
                out.append(p)
        except psutil.Error:
            pass
    return out


def _runs(proc, method: str) -> bool:
    import psutil
    try:
        return any(method in part for part in proc.cmdline())
    except psutil.Error:
        return False


def test_killed_actor_is_replaced_and_its_model_retried(slow_hub, tmp_path):
    import psutil
    import ray

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ds"
        th, box = run_in_thread(SurveyConfig(source=f"local:{slow_hub}", out=str(out), actors=2, cpus_per_actor=1,
                                             progress=False, max_in_flight=2,
                                             flush_models=1))
        # kill an actor while it analyzes a model: Ray titles the process by the method it runs (CPU time
        # is no sign: on a loaded machine an actor still starting up has used seconds of it)
        def busy():
            return [p for p in _actor_pids() if _runs(p, "_Worker.run")]
        wait_for(lambda: busy(), timeout=180)
        victim = busy()[0]
        victim.send_signal(signal.SIGKILL)
        th.join(timeout=600)
        assert "error" not in box, box.get("error")
        assert box["summary"]["num_success"] == N_SLOW
        assert_one_row_each(out, N_SLOW)
        assert q(out, "SELECT count(*) FROM models WHERE attempts = 2")[0][0] >= 1
        assert not psutil.pid_exists(victim.pid) or victim.status() == psutil.STATUS_ZOMBIE
    finally:
        ray.shutdown()


def test_killed_driver_then_rerun_completes_without_duplicates(slow_hub, tmp_path):
    out = tmp_path / "ds"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "hubscan.cli", "survey", "--source", f"local:{slow_hub}", "--out", str(out),
           "--actors", "2", "--no-progress", "--flush-models", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        wait_for(lambda: n_models(out) >= 2, timeout=300)
        os.killpg(proc.pid, signal.SIGKILL)  # the driver and everything it started
        proc.wait(timeout=60)
        done_before = n_models(out)
        assert 2 <= done_before < N_SLOW
        import ray
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            summary = survey(SurveyConfig(source=f"local:{slow_hub}", out=str(out), actors=2, progress=False))
        finally:
            ray.shutdown()
        # actors that outlive their driver may finish (and atomically write) their model meanwhile
        assert summary["num_already_done"] >= done_before
        assert summary["num_already_done"] + summary["num_success"] == N_SLOW
        assert_one_row_each(out, N_SLOW)
        assert not list(out.rglob("*.parquet.tmp*"))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ray_job_submit(tmp_path):
    """``ray job submit`` of jobs/survey.py to a head node started here (stopped by signal, not `ray stop`)."""
    from hubscan.demo.localhub import build_local_hub

    hub = tmp_path / "hub"
    for link in build_local_hub(hub):
        if os.path.basename(link) not in ("silero_vad_16k.safetensors", "v3_fold0.pt"):
            os.unlink(link)
    out = tmp_path / "ds"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    bindir = Path(sys.executable).parent
    gcs, dash, agent = _free_port(), _free_port(), _free_port()
    import tempfile
    ray_tmp = tempfile.mkdtemp(prefix="rj", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    head = subprocess.Popen([str(bindir / "ray"), "start", "--head", "--block", f"--port={gcs}", "--num-cpus=2",
                             "--include-dashboard=true", f"--dashboard-port={dash}", "--dashboard-host=127.0.0.1",
                             f"--dashboard-agent-listen-port={agent}", f"--temp-dir={ray_tmp}"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        import urllib.request

        def answers(url):
            try:
                return urllib.request.urlopen(url, timeout=2).status == 200
            except OSError:
                return False
        # the dashboard takes jobs, the head's job agent runs them: on a loaded machine the agent comes up
        # later (a submission meanwhile: "No available agent"); it announces itself once its HTTP server
        # (which serves this health check) is up
        wait_for(lambda: answers(f"http://127.0.0.1:{dash}/api/version"), timeout=180, step=1)
        wait_for(lambda: answers(f"http://127.0.0.1:{agent}/api/local_raylet_healthz"), timeout=180, step=1)
        job = subprocess.run([str(bindir / "ray"), "job", "submit", "--address", f"http://127.0.0.1:{dash}",
                              "--", sys.executable, str(REPO / "jobs" / "survey.py"), "--source", f"local:{hub}",
                              "--out", str(out), "--no-progress"],
                             env=env, capture_output=True, text=True, timeout=600)
        assert job.returncode == 0, job.stdout[-2000:] + job.stderr[-2000:]
        assert "succeeded" in (job.stdout + job.stderr).lower()
        assert_one_row_each(out, 2)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        try:
            head.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(head.pid, signal.SIGKILL)
        import shutil
        shutil.rmtree(ray_tmp, ignore_errors=True)


def test_ctrl_c_stops_cleanly(slow_hub, tmp_path):
    """SIGINT to the driver: exit 130, the survey row says interrupted, only complete files visible,
    and a rerun finishes the rest without duplicates."""
    out = tmp_path / "ds"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    proc = subprocess.Popen([sys.executable, "-m", "hubscan.cli", "survey", "--source", f"local:{slow_hub}",
                             "--out", str(out), "--actors", "1", "--no-progress", "--flush-models", "1"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    wait_for(lambda: n_models(out) >= 1, timeout=300)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err[-2000:]
    assert q(out, "SELECT interrupted FROM surveys") == [(True,)]
    done = n_models(out)
    assert 1 <= done < N_SLOW
    from hubscan.store import Dataset
    for t in ("models", "layers", "esd", "surveys"):
        Dataset(str(out)).read(t)  # every committed file is complete
    # the survey row counts exactly what landed
    assert q(out, "SELECT num_success FROM surveys") == [(done,)]
    import ray
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        s = survey(SurveyConfig(source=f"local:{slow_hub}", out=str(out), actors=2, progress=False))
    finally:
        ray.shutdown()
    assert s["num_already_done"] == done
    assert_one_row_each(out, N_SLOW)


def test_sigterm_stops_like_ctrl_c(slow_hub, tmp_path):
    """SIGTERM (kill, `timeout`, Slurm, Kubernetes) to the CLI driver after Ray started: one
    ``hubscan:`` line, exit 143 = 128 + 15, no native crash dump (absl's "*** SIGTERM received" that
    ``ray.init`` installs), the survey row interrupted with what was committed, the lease released,
    and a rerun finishes the rest."""
    from hubscan.store import Dataset, Lease
    out = tmp_path / "ds"
    env = {**os.environ, "RAY_AUTH_MODE": "disabled"}
    cmd = [sys.executable, "-m", "hubscan.cli", "survey", "--source", f"local:{slow_hub}", "--out", str(out),
           "--actors", "1", "--no-progress", "--flush-models", "1"]
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: n_models(out) >= 1, timeout=300)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, err[-2000:]
    assert "SIGTERM received" not in err and "PC: @" not in err, err[-2000:]
    assert [ln for ln in err.splitlines() if ln.startswith("hubscan:")] == ["hubscan: interrupted (SIGTERM)"], err
    done = n_models(out)
    assert 1 <= done < N_SLOW
    assert q(out, "SELECT interrupted, num_success FROM surveys") == [(True, done)]
    assert Lease(Dataset(str(out), create=False), "probe").current()["state"] == "free"
    rerun = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    assert q(out, "SELECT count(*) FILTER (WHERE interrupted) , count(*) FROM surveys") == [(1, 2)]
    assert_one_row_each(out, N_SLOW)


def _tiny_models(root: Path, n: int = 3) -> Path:
    root.mkdir()
    g = torch.Generator().manual_seed(0)
    for i in range(n):
        save_file({"h.weight": torch.randn(48, 32, generator=g)}, str(root / f"m{i}.safetensors"))
    return root


def test_an_address_where_no_ray_cluster_listens_fails_at_once_in_one_line(tmp_path):
    """``--address`` at a closed port: one ``hubscan: error: ADDRESS: …`` line and exit 1 before the source is
    listed or the dataset touched (no Ray start, so none of Ray's minutes of connect retries and log lines)."""
    models, out = _tiny_models(tmp_path / "many"), tmp_path / "ds"
    address = f"127.0.0.1:{_free_port()}"  # bound, then closed: nothing listens there
    proc = subprocess.run([sys.executable, "-m", "hubscan.cli", "survey", "--source", f"local:{models}", "--out",
                           str(out), "--address", address, "--no-progress"],
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, check=False,
                          timeout=120)  # not a timing: a bound, should the address be retried as Ray does
    assert proc.returncode == 1, proc.stderr[-2000:]
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"hubscan: error: {address}: no Ray cluster answers there ("), lines
    assert "refused" in lines[0].lower() and "Error" not in lines[0]  # the reason, no exception class name
    assert not out.exists()  # nothing listed, held or written: no surveys row for a survey that never started


def test_actors_that_cannot_start_stop_the_survey_in_one_line(tmp_path):
    """A ``hubscan`` package in the folder a survey runs from: Ray puts that folder first on its workers' path, so
    every actor fails to start (``cannot import name '__version__'``). Before, each was replaced for ever and the
    survey printed progress lines until killed; now it stops after three in a row with one line naming the
    worker's error and the folder, exit 1, the survey row ``interrupted``, no model row."""
    from hubscan.store import Dataset
    models, out, work = _tiny_models(tmp_path / "many"), tmp_path / "ds", tmp_path / "work"
    (work / "hubscan").mkdir(parents=True)
    (work / "hubscan" / "__init__.py").write_text("")  # another 'hubscan': the workers import this one
    proc = subprocess.run([sys.executable, "-P", "-m", "hubscan.cli", "survey", "--source", f"local:{models}",
                           "--out", str(out), "--no-progress"], cwd=work,  # -P: the driver itself imports ours
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, check=False,
                          timeout=600)  # a bound, not a timing: before, this never ended
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("hubscan:")]
    assert "Traceback" not in proc.stderr and len(errors) == 1 and errors[0].startswith(
        "hubscan: error: analysis actors: 3 failed to start and none runs: cannot import name '__version__' from "
        "'hubscan'"), proc.stderr[-2000:]
    assert "the current folder holds a 'hubscan' that Ray's workers import" in errors[0]
    assert "ImportError" not in errors[0] and "\x1b" not in errors[0]
    ds = Dataset(str(out), create=False)
    assert [r["interrupted"] for r in ds.read("surveys").to_pylist()] == [True]
    assert ds.read("models").num_rows == 0


def test_actors_running_another_hubscan_refuse_to_start(tmp_path):
    """A worker whose ``hubscan`` imports fine but is not the driver's (a stale install on a node; here a copy
    with one line changed, in the folder Ray puts first on the workers' path) would add rows of other code under
    the same config hash: its actors refuse to start, naming both versions, and the survey stops in one line."""
    import shutil

    import hubscan
    from hubscan.store import Dataset
    from hubscan.survey import code_identity
    models, out, work = _tiny_models(tmp_path / "many"), tmp_path / "ds", tmp_path / "work"
    shutil.copytree(Path(hubscan.__file__).parent, work / "hubscan", ignore=shutil.ignore_patterns("__pycache__"))
    with open(work / "hubscan" / "analysis.py", "a") as f:
        f.write("\n# an older analysis\n")
    proc = subprocess.run([sys.executable, "-P", "-m", "hubscan.cli", "survey", "--source", f"local:{models}",
                           "--out", str(out), "--no-progress"], cwd=work,  # -P: the driver itself imports ours
                          env={**os.environ, "RAY_AUTH_MODE": "disabled"}, capture_output=True, text=True, check=False,
                          timeout=600)
    assert proc.returncode == 1, proc.stderr[-2000:]
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("hubscan:")]
    assert len(errors) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    ours = code_identity()
    assert errors[0].startswith("hubscan: error: analysis actors: 3 failed to start and none runs: hubscan on "), errors
    assert f"the survey's driver runs {ours}: install the same hubscan on every node" in errors[0], errors
    theirs = re.search(r": is (\S+) \(", errors[0]).group(1)
    assert theirs.split("+")[0] == ours.split("+")[0] and theirs != ours  # same version number, other code
    assert Dataset(str(out), create=False).read("models").num_rows == 0


def test_actor_start_error_is_the_workers_reason_without_class_names():
    from hubscan.survey import actor_start_error, shadowing_hint
    report = ("The actor died because of an error raised in its creation task, \x1b[36mray::_Worker.__init__()\x1b[39m "
              "(pid=1, ip=10.0.0.1)\n  File \"/x/hubscan/survey.py\", line 67, in <module>\n    from hubscan import "
              "__version__\nImportError: cannot import name '__version__' from 'hubscan' (unknown location)\n")
    assert actor_start_error(RuntimeError(report)) == "cannot import name '__version__' from 'hubscan' (unknown location)"
    assert actor_start_error(RuntimeError("torch.cuda.OutOfMemoryError: CUDA out of memory")) == "CUDA out of memory"
    assert actor_start_error(RuntimeError("")) == "unknown reason"
    assert shadowing_hint(str(Path(__file__).parent)) == ""  # tests/ holds no 'hubscan'


def test_check_cluster_probes_the_port_an_address_names():
    """A Ray Client address (``ray://``) is probed at its port like a GCS address; one without a port (``auto``)
    is left to Ray; a listening port passes."""
    from hubscan.errors import ClusterUnreachableError
    from hubscan.survey import check_cluster
    port = _free_port()
    with pytest.raises(ClusterUnreachableError, match=f"^ray://127.0.0.1:{port}: no Ray cluster answers there") as e:
        check_cluster(f"ray://127.0.0.1:{port}")
    assert isinstance(e.value, ConnectionError)
    check_cluster("auto")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        check_cluster(f"127.0.0.1:{s.getsockname()[1]}")


@pytest.mark.slow
@pytest.mark.parametrize("sig, code, line", [(signal.SIGTERM, 143, "hubscan: interrupted (SIGTERM)"),
                                             (signal.SIGINT, 130, "hubscan: interrupted")])
def test_signal_while_ray_connects_exits_as_documented_and_records_an_interrupted_survey(tmp_path, sig, code, line):
    """A signal while ``ray.init`` connects (an address whose port accepts connections and never answers): exit
    128 + the signal with its one line (not Ray's ``sys.exit(15)``), the ``surveys`` row ``interrupted`` with
    nothing analyzed (the listing was done, its counts true), the lease released. The signal takes effect once
    Ray's connect call returns to Python (about 40 s with Ray 2.60: a 5 s connect, a 30 s wait)."""
    from hubscan.store import Dataset, Lease
    models, out = _tiny_models(tmp_path / "many"), tmp_path / "ds"
    silent = socket.socket()
    silent.bind(("0.0.0.0", 0))  # Ray connects to this machine's address for 127.0.0.1
    silent.listen(16)
    silent.settimeout(120)
    proc = subprocess.Popen([sys.executable, "-m", "hubscan.cli", "survey", "--source", f"local:{models}", "--out",
                             str(out), "--address", f"127.0.0.1:{silent.getsockname()[1]}", "--no-progress"],
                            env={**os.environ, "RAY_AUTH_MODE": "disabled"}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        with silent:
            probe, _ = silent.accept()  # hubscan's check that something listens, before the listing
            ray_conn, _ = silent.accept()  # ray.init connecting, after the listing
            proc.send_signal(sig)
            _, err = proc.communicate(timeout=300)
            probe.close()
            ray_conn.close()
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == code, err[-2000:]
    assert [ln for ln in err.splitlines() if ln.startswith("hubscan:")] == [line], err[-2000:]
    assert q(out, "SELECT interrupted, num_models, num_success, num_failed FROM surveys") == [(True, 3, 0, 0)]
    assert Lease(Dataset(str(out), create=False), "probe").current()["state"] == "free"
