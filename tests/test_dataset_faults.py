"""The dataset under faults and concurrency (issue 21, cases ``hub-r3/4_dataset``: 20 models × 4
matrices 512×256, built here): two surveys at once (the second refused in one line naming the holder; a
killed holder taken over; no row twice), the lease's atomic acquisition on a local disk and on S3
(moto), a read-only dataset and a write error mid-survey (one line, bounded time), a truncated
``_delta_log`` commit (one line naming the table and the file; ``hubscan doctor`` and its repair),
and an unreachable Hub (the survey stops before writing model rows; mid-survey it leaves the models
not yet analyzed for the next run). Each case runs through the CLI in a subprocess, as an operator
would, unless it needs to reach inside (the Hub going away mid-survey)."""

from __future__ import annotations

import json
import os
import shutil
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

from hubscan.errors import DatasetBusyError, HubUnreachableError  # noqa: E402
from hubscan.store import Dataset, Lease  # noqa: E402
from test_store_s3 import s3  # noqa: E402,F401 - the moto server fixture
from test_survey import q  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": str(REPO), "RAY_AUTH_MODE": "disabled", "HF_HUB_DISABLE_TELEMETRY": "1"}
N_MODELS = 20


def wait_for(pred, timeout=300, step=0.2):
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if pred():
            return
        time.sleep(step)
    raise TimeoutError("condition not reached")


def cli(*args, timeout=600, prefix=()) -> tuple[int, str, str, float]:
    """``hubscan ARGS`` in a subprocess: (exit status, stdout, stderr, seconds)."""
    t0 = time.monotonic()
    p = subprocess.run([*prefix, sys.executable, "-m", "hubscan.cli", *map(str, args)], env=ENV,
                       capture_output=True, text=True, timeout=timeout)
    return p.returncode, p.stdout, p.stderr, time.monotonic() - t0


def error_line(err: str) -> str:
    """The one line of a failed command (and nothing else on stderr)."""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hubscan: error: "), err[-2000:]
    return lines[0]


def survey_args(hub: Path, out, *more) -> list:
    return ["survey", "--source", f"local:{hub}", "--out", out, "--actors", "1", "--flush-models", "1",
            "--no-progress", "-q", *more]


def lease_state(out, **so) -> dict | None:
    return Lease(Dataset(str(out), create=False, **so), "probe").current()


def n_models(out) -> int:
    return len(Dataset(str(out), create=False).done())


@pytest.fixture(scope="module")
def hub20(tmp_path_factory) -> Path:
    """The case's 20 models, each 4 heavy-tailed 512×256 float32 matrices (safetensors)."""
    root = tmp_path_factory.mktemp("hub20")
    rng = np.random.default_rng(21)
    for i in range(N_MODELS):
        save_file({f"block{j}.weight": torch.from_numpy(rng.standard_t(4, (512, 256)).astype(np.float32))
                   for j in range(4)}, str(root / f"m{i:02d}.safetensors"))
    return root


@pytest.fixture(scope="module")
def two_surveys(hub20, tmp_path_factory) -> dict:
    """Survey A runs; once it has written 3 models it is frozen (SIGSTOP of its process group: alive, holding
    the lease, and unable to finish however fast the analysis is); survey B is started into the same
    dataset meanwhile; A is then killed (SIGKILL) and survey C reruns; D is a plain rerun. Returns the
    dataset and what each did."""
    out = tmp_path_factory.mktemp("two") / "ds"
    a = subprocess.Popen([sys.executable, "-m", "hubscan.cli", *map(str, survey_args(hub20, out))], env=ENV,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for(lambda: (lease_state(out) or {}).get("pid") == a.pid and n_models(out) >= 3, step=0.05)
        os.killpg(a.pid, signal.SIGSTOP)
        holder = lease_state(out)
        b = cli(*survey_args(hub20, out))
        done_a = n_models(out)
        os.killpg(a.pid, signal.SIGKILL)  # the driver and everything it started
        a.wait(timeout=60)
    finally:
        if a.poll() is None:
            os.killpg(a.pid, signal.SIGKILL)
    c = cli(*survey_args(hub20, out))
    d = cli(*survey_args(hub20, out))
    return {"out": out, "a_pid": a.pid, "holder": holder, "b": b, "done_a": done_a, "c": c, "d": d}


def test_second_survey_refused_in_one_line_naming_the_holder(two_surveys):
    rc, out, err, seconds = two_surveys["b"]
    holder = two_surveys["holder"]
    assert rc == 1 and out == ""
    line = error_line(err)
    for part in (f"survey {holder['holder']}", f"host {socket.gethostname()}", f"pid {two_surveys['a_pid']}",
                 "since ", "one writer at a time"):
        assert part in line, line
    assert seconds < 120  # refused before planning or starting Ray (measured here: ~10 s, mostly imports)


def test_killed_holder_taken_over_and_no_model_twice(two_surveys):
    out = two_surveys["out"]
    rc, _, err, _ = two_surveys["c"]
    assert rc == 0, err[-2000:]  # the holder's process is gone: taken over at once, no wait for its lease time
    assert 3 <= two_surveys["done_a"] < N_MODELS
    assert q(out, "SELECT count(*), count(DISTINCT model_key), count(*) FILTER (WHERE status = 'success') "
                  "FROM models") == [(N_MODELS, N_MODELS, N_MODELS)]
    assert q(out, "SELECT count(*), count(DISTINCT (model_key, layer_id, part)) FROM layers") == [(4 * N_MODELS,) * 2]
    assert q(out, "SELECT count(*), count(DISTINCT (model_key, layer_id, part)) FROM esd") == [(4 * N_MODELS,) * 2]
    # the plain rerun finds everything done and keeps one row each
    rc, _, err, _ = two_surveys["d"]
    assert rc == 0, err[-2000:]
    assert q(out, "SELECT count(*), count(DISTINCT model_key) FROM models") == [(N_MODELS, N_MODELS)]
    assert q(out, "SELECT num_already_done, num_success FROM surveys ORDER BY started_at DESC LIMIT 1") == [(20, 0)]
    assert lease_state(out)["state"] == "free"  # released by the last survey


def _hold_elsewhere(out, so: dict, seconds: float) -> subprocess.Popen:
    """A process that takes the dataset's lease as if on another host and holds it until killed."""
    code = ("import json, socket, sys, time\n"
            "socket.gethostname = lambda: 'other-host'\n"
            "from hubscan.store import Dataset, Lease\n"
            "data = Dataset(sys.argv[1], **json.loads(sys.argv[2]))\n"
            "Lease(data, 'cron-week-1', seconds=float(sys.argv[3])).acquire()\n"
            "print('held', flush=True)\n"
            "time.sleep(3600)\n")
    p = subprocess.Popen([sys.executable, "-c", code, str(out), json.dumps(so), str(seconds)], env=ENV,
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout.readline().strip() == "held"
    return p


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_lease_is_atomic_and_a_dead_holder_elsewhere_is_taken_over_after_its_time(backend, request, tmp_path, hub20):
    so = request.getfixturevalue("s3") if backend == "s3" else {}
    out = f"s3://hubscan/lease-{tmp_path.name}" if backend == "s3" else str(tmp_path / "ds")
    # 6 writers race for a free lease: exactly one gets it (a Delta commit that cannot be retried onto
    # a later version: the store's put-if-absent decides), the others are refused naming it
    box, gate = [], threading.Barrier(6)

    def race(i):
        lease = Lease(Dataset(out, **so), f"racer-{i}")
        gate.wait()
        try:
            box.append(lease.acquire())
        except DatasetBusyError as exc:
            box.append(exc)
    threads = [threading.Thread(target=race, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [x for x in box if isinstance(x, Lease)]
    assert len(winners) == 1 and len(box) == 6
    assert all(f"survey {winners[0].holder} " in str(x) for x in box if x is not winners[0])
    winners[0].release()
    assert lease_state(out, **so)["state"] == "free"

    # a holder on another host: a second survey is refused in one line (before planning or Ray)
    holder = _hold_elsewhere(out, so, seconds=20)
    try:
        rc, _, err, _ = cli("survey", "--source", f"local:{hub20}", "--out", out,
                            *(["--storage-options", json.dumps(so)] if so else []))
        line = error_line(err)
        assert rc == 1 and "survey cron-week-1 (host other-host, pid " in line and "taken over after 20 s" in line
    finally:
        holder.kill()  # its host is lost: no renewal any more, and its pid means nothing here
        holder.wait()
    with pytest.raises(DatasetBusyError, match="other-host"):  # within its lease time it still holds
        Lease(Dataset(out, **so), "next-week").acquire()
    probe = Lease(Dataset(out, **so), "probe")
    wait_for(lambda: probe.stale(probe.current()) is not None, timeout=120)
    lease = Lease(Dataset(out, **so), "next-week").acquire()
    try:
        assert lease.took_over[0]["holder"] == "cron-week-1" and "not renewed for" in lease.took_over[1]
        assert lease_state(out, **so)["holder"] == "next-week"
    finally:
        lease.release()


def test_a_commit_without_a_state_does_not_free_the_lease(tmp_path):
    """Two writers that find no lease table both create it: the second creation is a commit of its own
    after the first holder's (seen in 8 of 30 races of 6 threads). It records no lease state and must not
    read as a free lease."""
    from deltalake import DeltaTable
    from deltalake.transaction import CommitProperties

    out = str(tmp_path / "ds")
    first = Lease(Dataset(out), "first").acquire()
    try:
        dt = DeltaTable(os.path.join(out, "_lease"))
        dt.create_write_transaction([], mode="append", schema=dt.schema(),
                                    commit_properties=CommitProperties(custom_metadata={"other": "commit"}))
        with pytest.raises(DatasetBusyError, match="survey first "):
            Lease(Dataset(out), "second").acquire()
    finally:
        first.release()
    assert lease_state(out)["state"] == "free"


def _small_dataset(out: Path, hub: Path, models=slice(0, 2)) -> None:
    """A dataset of some of the case's models written in this process (no Ray), one ``models`` commit each."""
    import hubscan
    ds = Dataset(str(out))
    for path in sorted(hub.iterdir())[models]:
        res = hubscan.analyze(path)
        ident = {"model_key": path.stem, "source": "local", "model_id": path.name, "revision": "r"}
        ds.write_model({**ident, "status": "success"}, [{**ident, **r} for r in res.rows])


def _as_unprivileged() -> tuple:
    """A command prefix under which permissions apply (root ignores them): without the capabilities
    that override file modes."""
    if os.geteuid() != 0:
        return ()
    if shutil.which("setpriv") is None:
        pytest.skip("running as root without setpriv: file permissions cannot be made to apply")
    return ("setpriv", "--bounding-set=-dac_override,-fowner")


def test_read_only_dataset_refused_before_ray(hub20, tmp_path):
    out = tmp_path / "ds"
    _small_dataset(out, hub20)
    prefix = _as_unprivileged()
    subprocess.run(["chmod", "-R", "a-w", str(out)], check=True)
    try:
        rc, stdout, err, seconds = cli(*survey_args(hub20, out, "--force"), prefix=prefix, timeout=300)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(out)], check=True)
    line = error_line(err)
    assert rc == 1 and stdout == "" and line == f"hubscan: error: {out}: cannot write to the dataset: permission denied"
    assert seconds < 120  # measured here: ~12 s (imports on a busy 2-core machine); before: no end at 300 s
    assert n_models(out) == 2 and not (out / "_lease").exists()


def test_write_error_mid_survey_ends_it_in_one_line(hub20, tmp_path):
    out = tmp_path / "ds"
    prefix = _as_unprivileged()
    proc = subprocess.Popen([*prefix, sys.executable, "-m", "hubscan.cli", *map(str, survey_args(hub20, out))],
                            env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        wait_for(lambda: n_models(out) >= 2, step=0.05)
        os.killpg(proc.pid, signal.SIGSTOP)  # frozen meanwhile: a fast survey cannot end before the tables change
        for table in ("esd", "layers", "models"):  # the data tables become read-only (the lease stays writable)
            subprocess.run(["chmod", "-R", "a-w", str(out / table)], check=True)
        os.killpg(proc.pid, signal.SIGCONT)
        t0 = time.monotonic()
        stdout, err = proc.communicate(timeout=300)
        seconds = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        subprocess.run(["chmod", "-R", "u+w", str(out)], check=True)
    line = error_line(err)
    assert proc.returncode == 1 and "permission denied" in line.lower() and ("cannot commit" in line or "cannot write" in line)
    assert seconds < 60  # the next write fails and ends the survey (measured here: 2–10 s)
    committed = n_models(out)
    assert 2 <= committed < N_MODELS
    assert q(out, "SELECT count(*), count(DISTINCT model_key) FROM models") == [(committed, committed)]
    rc, report, err, _ = cli("doctor", "--dataset", out)
    assert rc == 0, report + err  # nothing damaged: the failed commit never happened


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def test_truncated_log_of_the_latest_commit(two_surveys, tmp_path):
    """The newest ``models`` commit truncated to half (here the end-of-survey compaction): one line naming
    the table and the file; the other tables stay queryable; the doctor rolls ``models`` back one version,
    where every model is (in the small files the compaction had replaced)."""
    out = tmp_path / "ds"
    shutil.copytree(two_surveys["out"], out)
    commits = Dataset(str(out)).log_files("models")[0]
    latest = max(commits)
    damaged = Path(commits[latest])
    _truncate(damaged)

    rc, _, err, seconds = cli("sql", "--dataset", out, "SELECT count(*) FROM models")
    line = error_line(err)
    assert rc == 1 and f"{damaged}: table models: truncated commit file" in line and "hubscan doctor" in line
    assert seconds < 60 and "backtrace" not in err.lower()
    rc, stdout, err, _ = cli("sql", "--dataset", out, "SELECT count(*) FROM layers", "--format", "csv")
    assert rc == 0 and stdout.splitlines()[1] == str(4 * N_MODELS), err

    rc, report, err, _ = cli("doctor", "--dataset", out)
    assert rc == 1, err
    assert f"  {damaged}: truncated commit file" in report
    assert f"repair: roll models back to version {latest - 1}" in report and "layers: sound" in report

    rc, done, err, _ = cli("doctor", "--dataset", out, "--repair")
    assert rc == 0 and f"models: rolled back to version {latest - 1}" in done, done + err
    assert list((out / "_doctor").rglob(damaged.name))  # the damaged file kept
    assert q(out, "SELECT count(*), count(DISTINCT model_key) FROM models") == [(N_MODELS, N_MODELS)]
    assert Dataset(str(out)).version("models") == latest  # version numbers keep their meaning
    rc, report, err, _ = cli("doctor", "--dataset", out)
    assert rc == 0 and "models: sound" in report, report + err


def test_truncated_log_mid_table_repaired_then_redone(two_surveys, hub20, tmp_path):
    """A ``layers`` commit in the middle of its log truncated: the doctor rolls ``layers`` back to the version
    before, removes from ``models`` the models whose layer rows that lost, and the next survey redoes
    exactly those, with no row twice."""
    out = tmp_path / "ds"
    shutil.copytree(two_surveys["out"], out)
    ds = Dataset(str(out))
    commits = ds.log_files("layers")[0]
    middle = sorted(commits)[len(commits) // 2]
    _truncate(Path(commits[middle]))
    rc, _, err, _ = cli("sql", "--dataset", out, "SELECT count(*) FROM layers")
    assert rc == 1 and f"{commits[middle]}: table layers: truncated commit file" in error_line(err)

    rc, done, err, _ = cli("doctor", "--dataset", out, "--repair")
    assert rc == 0, done + err
    kept = q(out, "SELECT count(DISTINCT model_key) FROM layers")[0][0]
    assert 0 < kept < N_MODELS
    assert f"models: {N_MODELS - kept} models whose layer or eigenvalue rows were lost removed" in done
    assert q(out, "SELECT count(*) FROM models") == [(kept,)]

    rc, _, err, _ = cli(*survey_args(hub20, out))
    assert rc == 0, err[-2000:]
    assert q(out, "SELECT num_already_done, num_success FROM surveys ORDER BY started_at DESC LIMIT 1") == [
        (kept, N_MODELS - kept)]
    assert q(out, "SELECT count(*), count(DISTINCT model_key) FROM models") == [(N_MODELS, N_MODELS)]
    assert q(out, "SELECT count(*), count(DISTINCT (model_key, layer_id, part)) FROM layers") == [(4 * N_MODELS,) * 2]
    assert q(out, "SELECT count(*), count(DISTINCT (model_key, layer_id, part)) FROM esd") == [(4 * N_MODELS,) * 2]


def test_damaged_checkpoint_moved_aside_and_older_damage_reported(hub20, tmp_path):
    """``models`` read from a checkpoint (version 2) and one commit after it. A damaged commit older than the
    checkpoint stops only time travel: reported, the dataset still sound (exit 0). A truncated checkpoint: one
    line naming it; the repair moves it aside, readers replay the commits, every model is back."""
    from deltalake import DeltaTable
    base = tmp_path / "base"
    _small_dataset(base, hub20)
    DeltaTable(str(base / "models")).create_checkpoint()
    _small_dataset(base, hub20, slice(2, 3))
    commits, checkpoints, pointer = Dataset(str(base)).log_files("models")
    assert sorted(commits) == [0, 1, 2, 3] and list(checkpoints) == [2] and pointer

    old, cp = tmp_path / "old", tmp_path / "cp"
    shutil.copytree(base, old)
    shutil.copytree(base, cp)
    _truncate(old / "models" / "_delta_log" / Path(commits[1]).name)
    rc, report, err, _ = cli("doctor", "--dataset", old)
    assert rc == 0, report + err
    assert "models: readable (version 3, 3 data files), older commits damaged" in report
    assert "00000000000000000001.json: truncated commit file" in report and "only time travel" in report
    assert q(old, "SELECT count(*) FROM models") == [(3,)]

    damaged = cp / "models" / "_delta_log" / Path(checkpoints[2][0]).name
    _truncate(damaged)
    rc, _, err, _ = cli("sql", "--dataset", cp, "SELECT count(*) FROM models")
    assert rc == 1 and f"{damaged}: table models: checkpoint Parquet file cannot be read" in error_line(err)
    rc, done, err, _ = cli("doctor", "--dataset", cp, "--repair")
    assert rc == 0 and f"models: {damaged.name} (checkpoint Parquet file cannot be read) moved to _doctor/" in done, \
        done + err
    assert "models: _last_checkpoint (names the damaged checkpoint) moved" in done
    assert q(cp, "SELECT count(*), count(DISTINCT model_key) FROM models") == [(3, 3)]
    rc, report, err, _ = cli("doctor", "--dataset", cp)
    assert rc == 0 and "models: sound (version 3, 3 data files)" in report, report + err


# -- an unreachable Hub ---------------------------------------------------------------------------------

def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens once the socket is closed: connection refused


@pytest.mark.parametrize("source", [("timm", "--filter", "resnet18*"), ("hf", "--author", "google")],
                         ids=["timm", "hf"])
def test_unreachable_hub_stops_the_survey_before_any_row(tmp_path, source):
    """Whether the Hub is unreachable when the models are listed (hf) or when one is resolved (timm's
    list is local): one line naming the source, not the call that failed."""
    out = tmp_path / "ds"
    rc, stdout, err, seconds = cli("survey", "--source", *source, "--out", out,
                                   "--endpoint", f"http://127.0.0.1:{_closed_port()}", "--no-progress", "-q")
    line = error_line(err)
    assert rc == 1 and stdout == ""
    assert line.startswith(f"hubscan: error: {source[0]}: cannot reach the Hub at http://127.0.0.1:"), line
    assert line.endswith("the survey stopped before writing any model (a later run is unaffected)")
    assert seconds < 120  # no retries: a refused connection is an outage (measured here: ~25 s, imports)
    ds = Dataset(str(out), create=False)
    assert ds.table("models") is None and ds.table("surveys") is None
    assert (lease_state(out) or {"state": "never taken"})["state"] in ("free", "never taken")  # hf: before the lease


def test_hub_lost_mid_survey_leaves_the_rest_for_the_next_run(hub20, tmp_path):
    """The Hub goes away as the second of three models is read: the first stays committed, the others get
    no row (no "failed: cannot reach the Hub"), the error says what is left; the next run, with the Hub
    back, does exactly those two."""
    import ray
    from hub_server import FakeHub, drop, isolated_hf_client
    from hubscan.survey import SurveyConfig, survey

    weights = sorted(hub20.iterdir())[0]
    repos = ["org/first", "org/second", "org/third"]
    out = tmp_path / "ds"
    with isolated_hf_client(tmp_path / "cache"):
        hub = FakeHub().start()
        for i, repo in enumerate(repos):
            hub.add_model(repo, {"model.safetensors": weights}, info={"downloads": 10 - i})

        def outage(r):  # the second model's first weight read: its connection dropped, the Hub closed
            if r.repo_id == "org/second" and r.kind == "resolve" and r.method == "GET":
                threading.Thread(target=hub.close, daemon=True).start()
                return True
            return False
        hub.inject(outage, drop(), times=1)
        cfg = SurveyConfig(source="hf", out=str(out), actors=1, max_in_flight=1, flush_models=1, progress=False,
                           hub={"endpoint": hub.endpoint, "max_retries": 2, "backoff": 1.0})
        ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            with pytest.raises(HubUnreachableError) as info:
                survey(cfg)
            assert str(info.value).startswith(f"hf: cannot reach the Hub at {hub.endpoint} ")
            assert str(info.value).endswith("the survey stopped (models committed: 1; left for the next run: 2)")
            assert q(out, "SELECT model_id, status FROM models") == [("org/first", "success")]
            assert q(out, "SELECT interrupted, num_success, num_failed FROM surveys") == [(True, 1, 0)]

            hub.clear_faults()
            hub.start()  # back (on another port)
            cfg.hub["endpoint"] = hub.endpoint
            summary = survey(cfg)
        finally:
            ray.shutdown()
            hub.close()
    assert (summary["num_already_done"], summary["num_success"], summary["num_failed"]) == (1, 2, 0)
    assert q(out, "SELECT model_id, status FROM models ORDER BY 1") == [(r, "success") for r in repos]
    assert q(out, "SELECT count(*), count(DISTINCT (model_key, layer_id, part)) FROM layers") == [(12, 12)]


def test_actors_no_node_can_hold_are_refused_in_one_line(hub20, tmp_path):
    """Actors asking more than any node has (here: more CPUs than this machine, a GPU where there is none)
    would wait forever in Ray's queue: on the Ray the survey starts itself it stops in one line instead."""
    cpus = os.cpu_count() or 1
    for more, need in ((("--cpus-per-actor", cpus + 62), f"an actor needs {cpus + 62} CPU"),
                       (("--cpus-per-actor", 1, "--gpus-per-actor", 1), "an actor needs 1 CPU and 1 GPU")):
        if need.endswith("GPU") and torch.cuda.is_available():
            continue
        rc, out, err, seconds = cli(*survey_args(hub20, tmp_path / "ds", *more))
        line = error_line(err)
        assert rc == 1 and need in line and "no Ray node has that" in line, line
        assert seconds < 300
