"""hubscan.monitor in the three loops (plain, transformers Trainer, Lightning): the ``training`` table's rows are
the analysis of the model's weights at that step — equal to ``hubscan.analyze`` of a copy of them saved to a
file at that point — and the dataset's lease is held while training runs."""

from __future__ import annotations

import math

import pytest
import torch

import hubscan
import hubscan.monitor as monitor
from hubscan.store import Dataset, Lease

COMPARED = ("alpha", "D", "xmin", "lambda_max", "log_norm", "stable_rank", "num_spikes", "sigma_mp")


def _snapshot(model, path) -> str:
    from safetensors.torch import save_file
    save_file({k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}, str(path))
    return str(path)


def _check(ds_path, run_id, snapshots: dict, options) -> None:
    """Every (step → saved weights) of ``snapshots`` has exactly the analysis's rows in the training table."""
    rows = [r for r in Dataset(str(ds_path), create=False).read("training").to_pylist() if r["run_id"] == run_id]
    assert {r["step"] for r in rows} == set(snapshots)
    for step, path in snapshots.items():
        mine = {r["name"]: r for r in rows if r["step"] == step}
        ref = {r["name"]: r for r in hubscan.analyze(path, options).rows}
        assert set(mine) == set(ref), step
        for name, r in ref.items():
            assert mine[name]["status"] == r["status"] and mine[name]["layer_type"] == r["layer_type"]
            for c in COMPARED:
                a, b = mine[name][c], r[c]
                if b is None or (isinstance(b, float) and math.isnan(b)):
                    assert a is None, (step, name, c)
                else:
                    assert a == pytest.approx(b, rel=1e-12, abs=0), (step, name, c)


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(32, 96), torch.nn.ReLU(), torch.nn.Linear(96, 64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 4))


def _data(n=256):
    g = torch.Generator().manual_seed(1)
    X = torch.randn(n, 32, generator=g)
    return X, (X[:, :4].argmax(1))


def test_plain_loop_writes_the_training_table_and_tensorboard(tmp_path):
    model, (X, y) = _mlp(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    snaps, step = {}, 0
    with monitor.Monitor(model, tmp_path / "ds", every=2, unit="epoch", layers="!2.*", run_id="plain",
                         tensorboard=tmp_path / "tb") as mon:
        assert mon.options.precision == "float32" and mon.options.device == "cpu"
        mon.step(0, 0)
        snaps[0] = _snapshot(model, tmp_path / "s0.safetensors")
        for epoch in range(1, 5):
            for i in range(0, len(X), 32):
                loss = torch.nn.functional.cross_entropy(model(X[i:i + 32]), y[i:i + 32])
                opt.zero_grad()
                loss.backward()
                opt.step()
                step += 1
                if mon.step(step, epoch - 1 + (i + 32) / len(X)) is not None:  # the last batch ends the epoch
                    assert i + 32 == len(X)
                    snaps[step] = _snapshot(model, tmp_path / f"s{step}.safetensors")
            assert mon.step(step, epoch) is None  # once per epoch
        with pytest.raises(Exception, match="in use by hubscan training monitor plain"):
            Lease(Dataset(str(tmp_path / "ds")), "a-survey").acquire()
        assert Dataset(str(tmp_path / "ds"), create=False).read("training", columns=["step"]).column(
            "step").to_pylist() == [0] * 3  # the first analysis is committed; the others wait for flush_seconds
    assert sorted(snaps) == [0, 16, 32]  # epochs 0, 2, 4 (8 steps each)
    _check(tmp_path / "ds", "plain", snaps, mon.options)
    t = Dataset(str(tmp_path / "ds"), create=False).read("training").to_pylist()
    assert {(r["step"], r["epoch"]) for r in t} == {(0, 0.0), (16, 2.0), (32, 4.0)}
    assert {r["model_class"] for r in t} == {"Sequential"}
    skipped = [r for r in t if r["name"] == "2.weight"]
    assert skipped and all(r["status"] == "skipped" and "excluded by" in r["reason"] for r in skipped)
    with Lease(Dataset(str(tmp_path / "ds")), "after"):  # released at the end
        pass

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    acc = EventAccumulator(str(tmp_path / "tb"))
    acc.Reload()
    events = acc.Scalars("hubscan/alpha/0.weight")
    want = {s: r["alpha"] for s, _, r in mon.rows if r["name"] == "0.weight"}
    assert [e.step for e in events] == [0, 16, 32]
    assert [e.value for e in events] == pytest.approx([want[s] for s in (0, 16, 32)], rel=1e-6)  # float32 events
    assert "hubscan/alpha_mean" in acc.Tags()["scalars"]


def test_every_n_steps_and_bad_arguments(tmp_path):
    model = _mlp()
    mon = monitor.Monitor(model, every=3, unit="step")
    assert [s for s in range(10) if mon.step(s) is not None] == [0, 3, 6, 9]
    assert mon.step(9) is None and len(mon.results) == 4 and mon.to_pandas()["step"].nunique() == 4
    mon.close()
    with pytest.raises(RuntimeError, match="closed"):
        mon.analyze(10)
    for bad in ({"every": 0}, {"every": 1.5}, {"unit": "batch"}):
        with pytest.raises(ValueError):
            monitor.Monitor(model, **bad)
    with pytest.raises(ValueError):
        monitor.Monitor(model, layers="3-1")
    with pytest.raises(TypeError, match="a spec string"):
        monitor.Monitor(model, layers={0})
    with pytest.raises(ValueError, match="^mp_fit = 'no': not of type bool$"):
        monitor.Monitor(model, mp_fit="no")
    for layers in ([0], 0, "0"):  # ids as the API takes them: layer 0 (falsy) included
        with monitor.Monitor(model, every=1, unit="step", layers=layers) as mon:
            assert mon.options.layers == "0"
            assert {r["name"] for r in mon.step(0).rows if r["status"] == "success"} == {"0.weight"}
    with pytest.raises(TypeError):
        monitor.Monitor(model, not_an_option=1)


def test_dataset_in_use_is_refused_before_training(tmp_path):
    from hubscan.errors import DatasetBusyError
    with Lease(Dataset(str(tmp_path / "ds")), "survey-x"):
        with pytest.raises(DatasetBusyError, match="survey-x"):
            monitor.Monitor(_mlp(), tmp_path / "ds")


def test_missing_extras_name_the_extra(monkeypatch):
    import sys
    monkeypatch.setitem(sys.modules, "lightning", None)
    monkeypatch.setitem(sys.modules, "lightning.pytorch", None)
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.setattr(monitor, "_MADE", {})
    with pytest.raises(ImportError, match=r"pip install 'hubscan\[lightning\]'"):
        monitor.LightningCallback
    with pytest.raises(ImportError, match=r"pip install 'hubscan\[tensorboard\]'"):
        monitor.Monitor(_mlp(), tensorboard="tb")
    mon = monitor.Monitor(_mlp(), every=1, unit="step")  # the rest works without them
    assert mon.step(0) is not None


def test_transformers_trainer(tmp_path):
    transformers = pytest.importorskip("transformers")
    config = transformers.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                     intermediate_size=64, max_position_embeddings=16, num_labels=2)
    torch.manual_seed(0)
    model = transformers.BertForSequenceClassification(config)
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 64, (24, 8), generator=g)
    data = [{"input_ids": ids[i], "labels": int(ids[i, 0] % 2)} for i in range(len(ids))]
    snaps = {}

    class Snapshot(transformers.TrainerCallback):  # after hubscan's: the weights it just analyzed
        def on_train_begin(self, args, state, control, model=None, **kw):
            snaps[0] = _snapshot(model, tmp_path / "s0.safetensors")

        def on_step_end(self, args, state, control, model=None, **kw):
            if state.global_step % 2 == 0:
                snaps[state.global_step] = _snapshot(model, tmp_path / f"s{state.global_step}.safetensors")

    args = transformers.TrainingArguments(output_dir=str(tmp_path / "out"), num_train_epochs=2,
                                          per_device_train_batch_size=4, report_to=[], save_strategy="no",
                                          logging_strategy="no", use_cpu=True, disable_tqdm=True)
    cb = monitor.TransformersCallback(dataset=str(tmp_path / "ds"), every=2, unit="step", run_id="hf")
    transformers.Trainer(model=model, args=args, train_dataset=data, callbacks=[cb, Snapshot()]).train()
    assert sorted(snaps) == [0, 2, 4, 6, 8, 10, 12] and cb.monitor.closed
    _check(tmp_path / "ds", "hf", snaps, cb.monitor.options)
    rows = Dataset(str(tmp_path / "ds"), create=False).read("training").to_pylist()
    assert {r["epoch"] for r in rows if r["step"] == 6} == {1.0}
    assert {r["typed_by"] for r in rows} == {"module"}  # analyzed in memory: typed by the owning module
    types = {r["name"]: r["layer_type"] for r in rows if r["step"] == 0 and r["status"] == "success"}
    assert types["bert.embeddings.word_embeddings.weight"] == "embedding"
    assert types["bert.encoder.layer.0.attention.self.query.weight"] == "dense"


def test_lightning_trainer(tmp_path):
    L = pytest.importorskip("lightning")
    X, y = _data()
    snaps = {}

    class Module(L.LightningModule):
        def __init__(self):
            super().__init__()
            self.net = _mlp()

        def training_step(self, batch, i):
            return torch.nn.functional.cross_entropy(self.net(batch[0]), batch[1])

        def configure_optimizers(self):
            return torch.optim.SGD(self.parameters(), lr=0.1)

    class Snapshot(L.Callback):
        def on_fit_start(self, trainer, module):
            snaps[0] = _snapshot(module, tmp_path / "s0.safetensors")

        def on_train_epoch_end(self, trainer, module):
            snaps[trainer.global_step] = _snapshot(module, tmp_path / f"s{trainer.global_step}.safetensors")

    loader = torch.utils.data.DataLoader(torch.utils.data.TensorDataset(X, y), batch_size=64)
    cb = monitor.LightningCallback(dataset=str(tmp_path / "ds"), every=1, unit="epoch", run_id="pl")
    trainer = L.Trainer(max_epochs=3, accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, callbacks=[cb, Snapshot()])
    trainer.fit(Module(), loader)
    assert sorted(snaps) == [0, 4, 8, 12] and cb.monitor.closed
    _check(tmp_path / "ds", "pl", snaps, cb.monitor.options)
    rows = Dataset(str(tmp_path / "ds"), create=False).read("training").to_pylist()
    assert sorted({(r["step"], r["epoch"]) for r in rows}) == [(0, 0.0), (4, 1.0), (8, 2.0), (12, 3.0)]


def test_report_draws_alpha_over_training(tmp_path):
    from hubscan.report import alpha_over_training, build_report
    model, (X, y) = _mlp(), _data()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    with monitor.Monitor(model, tmp_path / "ds", every=4, unit="step", run_id="run-a", flush_seconds=0) as mon:
        for step in range(13):
            if step:
                loss = torch.nn.functional.cross_entropy(model(X[:64]), y[:64])
                opt.zero_grad()
                loss.backward()
                opt.step()
            mon.step(step, step / 4)
            steps = set(Dataset(str(tmp_path / "ds"), create=False).read("training", columns=["step"])
                        .column("step").to_pylist())
            assert steps == set(range(0, step + 1, 4))  # flush_seconds=0: committed after every analysis
    df = mon.to_pandas()
    fig = alpha_over_training(df)
    lines = [ln for ln in fig.axes[0].get_lines() if ln.get_gid() == "alpha-training"]
    fitted = df[(df["status"] == "success") & df["alpha"].notna()]["name"].unique()
    assert len(lines) == len(fitted) == 2  # 0.weight, 2.weight (4.weight: M = 4, too few eigenvalues)
    first = df[(df["name"] == "0.weight")].sort_values("step")
    assert list(lines[0].get_xdata()) == [0, 4, 8, 12]
    assert list(lines[0].get_ydata()) == pytest.approx(first["alpha"].tolist(), rel=1e-12)
    assert len(alpha_over_training(df, max_layers=1).axes[0].get_lines()) == 1 + 2  # 1 layer + 2 guides
    page = build_report(str(tmp_path / "ds"), tmp_path / "r.html").read_text()
    assert "Alpha during training" in page and "run-a" in page
    assert page.count("alt=\"alpha per layer over training of run run-a\"") == 1
