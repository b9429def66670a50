"""Alpha during training: analyze a model in memory every N steps or epochs and keep the rows.

Three ways into one :class:`Monitor`:

* a plain loop — ``mon = Monitor(model, dataset="out/ds", every=1, unit="epoch")``, then ``mon.step(step,
  epoch)`` after each optimizer step or at each epoch's end, ``mon.close()`` at the end (or ``with Monitor(...)
  as mon``);
* transformers — ``Trainer(..., callbacks=[hubscan.monitor.TransformersCallback(dataset=..., every=...)])``;
* Lightning — ``L.Trainer(callbacks=[hubscan.monitor.LightningCallback(dataset=..., every=...)])``
  (extra ``hubscan[lightning]``).

What an analysis is: ``hubscan.analyze(model, options)`` of the module as it is in memory (each tensor typed by
the module that owns it; nothing copied but the matrix being decomposed), under ``torch.no_grad``, by default in
float32 on the module's device (``precision="float32"``; any :class:`~hubscan.analysis.AnalyzeOptions` field or
registered option is a keyword: ``layers="dense,!*head*"``, ``traps=True``, ``mp_fit=False`` …). Before training
(step 0) the callbacks analyze once, so a run's curves start at the initial weights.

Where the rows go:

* ``rows`` — the :class:`~hubscan.records.LayerRecord` s of every analysis, with ``step`` / ``epoch``, in memory;
* ``dataset`` — the ``training`` Delta table of a hubscan dataset (:data:`hubscan.records.TRAINING_COLUMNS` +
  the ``layers`` columns; ``hubscan report`` draws α per layer over training from it), committed at the first
  analysis, then at most every ``flush_seconds`` (60) and at the end (:meth:`Monitor.flush`). The monitor holds the
  dataset's writer lease from its start to :meth:`Monitor.close` (README, "one writer at a time per dataset"):
  a dataset in use by a survey is refused before training starts, in one line naming the holder;
* ``tensorboard`` — a log folder or a ``SummaryWriter``: scalars ``hubscan/<metric>/<layer>`` for each
  ``scalars`` metric of each layer and ``hubscan/<metric>_mean`` for the model means (``torch.utils.tensorboard``;
  extra ``hubscan[tensorboard]``).

Cost: one analysis of the batch-size experiment's MLP and of a 12-layer transformer of width 256 is a few
percent of an epoch on CPU (``benchmarks/bench_monitor.py``; README, "Alpha during training").
"""

from __future__ import annotations

import datetime as dt
import logging
import math
import os
import time
import uuid
from typing import Any

from hubscan.analysis import AnalysisResult, AnalyzeOptions
from hubscan.records import RowStatus
from hubscan.schema import rows_to_table

log = logging.getLogger(__name__)

UNITS = ("step", "epoch")
#: The table the rows go to.
TABLE = "training"


def _missing(what: str, package: str, install: str) -> ImportError:
    return ImportError(f"hubscan.monitor: {what} needs {package}: pip install {install}")


def new_run_id() -> str:
    """``YYYYmmddTHHMMSS-xxxxxx`` (UTC time + 6 random hex digits), as survey ids are made."""
    return dt.datetime.now(dt.timezone.utc).strftime("%Y%m%dT%H%M%S") + "-" + uuid.uuid4().hex[:6]


class Monitor:
    """Analyze a torch module in memory every ``every`` steps or epochs (module docstring).

    Parameters
    ----------
    model : torch.nn.Module
        The model being trained (anything ``hubscan.analyze`` takes from memory).
    dataset : str or path, optional
        A hubscan dataset (local path or URL) whose ``training`` table receives the rows; its writer lease is
        held until :meth:`close`.
    every : int
        Analyze every ``every`` steps or epochs (≥ 1).
    unit : {"step", "epoch"}
        What ``every`` counts.
    layers : str, int, or list/tuple of int and str
        Which layers (``--layers`` syntax, :mod:`hubscan.esd.select`; ids and specs as
        :class:`hubscan.analysis.AnalyzeOptions` takes them); "" = all (or ``options.layers``).
    run_id : str, optional
        The run's id in the table (default :func:`new_run_id`).
    tensorboard : str, path or SummaryWriter, optional
        Where TensorBoard scalars go.
    scalars : tuple of str
        Layer metrics written as TensorBoard scalars (default alpha); the model means of the summary metrics
        are written too.
    options : AnalyzeOptions, optional
        Analysis settings (default: float32 on the module's device); ``**analyze_options`` override them.
    storage_options : dict, optional
        Filesystem options of ``dataset`` (:func:`hubscan.store.open_filesystem`).
    flush_seconds : float
        The rows are committed to ``dataset`` at the first analysis, then when an analysis ends at least this
        long after the last commit, and at :meth:`close` (0: after every analysis). One Delta commit costs
        about as much as analyzing a small model (README, "Alpha during training"); a crash loses at most
        this long of rows.

    Attributes
    ----------
    rows : list of (int, float, LayerRecord)
        (step, epoch, row) of every analysis so far.
    results : list of (int, float, AnalysisResult)
        The analyses themselves (their summaries), in order.

    Raises
    ------
    TypeError
        ``layers`` neither a spec, an id nor a list/tuple of them; an unknown option.
    ValueError
        ``every`` < 1, an unknown ``unit`` or a bad layer spec or option value.
    hubscan.errors.DatasetBusyError
        Another process holds the dataset's lease (a survey …).
    ImportError
        ``tensorboard`` given without the tensorboard package (the message names the extra).
    """

    def __init__(self, model, dataset: str | None = None, *, every: int = 1, unit: str = "epoch", layers: str = "",
                 run_id: str | None = None, tensorboard=None, scalars: tuple = ("alpha",),
                 options: AnalyzeOptions | None = None, storage_options: dict | None = None,
                 flush_seconds: float = 60.0, **analyze_options):
        import dataclasses

        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every = {every!r}: a whole number of steps or epochs ≥ 1")
        if unit not in UNITS:
            raise ValueError(f"unit = {unit!r}: one of {', '.join(UNITS)}")
        self.model, self.every, self.unit, self.scalars = model, every, unit, tuple(scalars)
        self.run_id = run_id or new_run_id()
        base = options or AnalyzeOptions(precision="float32", device=_device(model))
        if not (isinstance(layers, str) and layers == ""):  # a spec, an id (0 included) or a list of them
            analyze_options["layers"] = layers
        self.options = dataclasses.replace(base, **analyze_options)  # checked there (AnalyzeOptions)
        self.rows: list = []
        self.results: list = []
        self._done: set = set()
        self.closed = False
        self.flush_seconds = float(flush_seconds)
        self._pending: list = []   # tables of rows not committed yet
        self._flushed_at = None
        self._writer, self._own_writer = _summary_writer(tensorboard)
        self.dataset = self.lease = None
        if dataset is not None:
            from hubscan.store import Dataset, Lease, config_hash
            try:
                self.dataset = Dataset(os.fspath(dataset), **(storage_options or {}))
                self.dataset.check_writable()
                self.lease = Lease(self.dataset, self.run_id, operation="training monitor").acquire()
            except BaseException:
                if self._writer is not None and self._own_writer:
                    self._writer.close()
                raise
            self._config_hash = config_hash(self.options)

    # -- when ------------------------------------------------------------------------------------
    def due(self, step: int, epoch: float | None = None) -> bool:
        """Whether :meth:`step` analyzes at this point: the counter of ``unit`` is a multiple of ``every`` and
        was not analyzed yet (for ``epoch``: a whole number of epochs)."""
        if self.unit == "step":
            return step % self.every == 0 and ("step", step) not in self._done
        if epoch is None:
            return False
        whole = round(epoch)
        return abs(epoch - whole) < 1e-6 and whole % self.every == 0 and ("epoch", whole) not in self._done

    def step(self, step: int, epoch: float | None = None) -> AnalysisResult | None:
        """Call after each optimizer step or at each epoch's end: analyzes when :meth:`due`.

        Parameters
        ----------
        step : int
            Optimizer steps done so far (0 before training).
        epoch : float, optional
            Epochs done so far (a whole number at an epoch's end; fractional in between). Needed for
            ``unit="epoch"``.

        Returns
        -------
        AnalysisResult or None
            The analysis, when one ran.
        """
        if not self.due(step, epoch):
            return None
        return self.analyze(step, epoch)

    # -- what ------------------------------------------------------------------------------------
    def analyze(self, step: int, epoch: float | None = None) -> AnalysisResult:
        """Analyze the model now and record the rows (dataset, TensorBoard, :attr:`rows`).

        Raises
        ------
        hubscan.errors.HubscanError
            The model holds no weight matrix, or the dataset could not be written (a layer's problem is its
            row's, never raised).
        RuntimeError
            The monitor was closed.
        """
        import torch

        import hubscan

        if self.closed:
            raise RuntimeError("hubscan.monitor: this monitor is closed")
        with torch.no_grad():
            result = hubscan.analyze(self.model, self.options)
        epoch = None if epoch is None else float(epoch)
        self._done.add(("step", int(step)))
        if epoch is not None and abs(epoch - round(epoch)) < 1e-6:
            self._done.add(("epoch", round(epoch)))
        self.results.append((int(step), epoch, result))
        self.rows.extend((int(step), epoch, r) for r in result.rows)
        if self.dataset is not None:
            ident = {"run_id": self.run_id, "step": int(step), "epoch": epoch, "model_class": type(self.model).__name__,
                     "config_hash": self._config_hash, "analyzed_at": dt.datetime.now(dt.timezone.utc)}
            self._pending.append(rows_to_table(result.rows, TABLE, ident))
            if self._flushed_at is None or time.monotonic() - self._flushed_at >= self.flush_seconds:
                self.flush()
        if self._writer is not None:
            self._tensorboard(int(step), result)
        return result

    def _tensorboard(self, step: int, result: AnalysisResult) -> None:
        for r in result.rows:
            if r.status != RowStatus.SUCCESS:
                continue
            for name in self.scalars:
                v = r.get(name)
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._writer.add_scalar(f"hubscan/{name}/{r.key}", v, step)
        for name, v in result.summary.items():
            if name in _summary_names() and isinstance(v, float) and math.isfinite(v):
                self._writer.add_scalar(f"hubscan/{name}_mean", v, step)
        self._writer.flush()

    def flush(self) -> None:
        """Commit the rows not committed yet to the dataset's ``training`` table (one Delta commit).

        Raises
        ------
        hubscan.errors.DatasetWriteError
            The commit failed (the rows stay pending for the next flush).
        hubscan.errors.DatasetBusyError
            The lease was lost to another writer.
        """
        if self.dataset is None or not self._pending:
            return
        import pyarrow as pa

        self.dataset.write(TABLE, pa.concat_tables(self._pending))
        self._pending, self._flushed_at = [], time.monotonic()

    # -- the end ---------------------------------------------------------------------------------
    def close(self) -> None:
        """Commit the pending rows, release the dataset's lease, close the TensorBoard writer it opened
        (idempotent)."""
        if self.closed:
            return
        self.closed = True
        try:
            self.flush()
        finally:
            self._release()

    def _release(self) -> None:
        if self.lease is not None:
            self.lease.release()
        if self._writer is not None and self._own_writer:
            self._writer.close()

    def __enter__(self) -> "Monitor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def to_pandas(self):
        """:attr:`rows` as a DataFrame with the ``training`` table's columns (run_id, step, epoch, layer columns)."""
        import pandas as pd

        frames = [rows_to_table(res.rows, TABLE, {"run_id": self.run_id, "step": s, "epoch": e,
                                                  "model_class": type(self.model).__name__}).to_pandas()
                  for s, e, res in self.results]
        return pd.concat(frames, ignore_index=True) if frames else rows_to_table([], TABLE).to_pandas()


def _summary_names() -> tuple:
    from hubscan.esd.registry import summary_metrics
    return summary_metrics()


def _device(model) -> str:
    """The device of the module's first parameter or buffer (``cpu`` when it has none or is not a module)."""
    for get in ("parameters", "buffers"):
        for t in getattr(model, get, lambda: ())():
            return str(t.device)
    return "cpu"


def _summary_writer(tensorboard) -> tuple[Any, bool]:
    """(writer, opened here) for a log folder, a writer, or None."""
    if tensorboard is None:
        return None, False
    if hasattr(tensorboard, "add_scalar"):
        return tensorboard, False
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise _missing("TensorBoard scalars", "tensorboard", "'hubscan[tensorboard]'") from None
    return SummaryWriter(str(tensorboard)), True


# -- the trainers' callbacks (their base classes come from optional packages: made on first use) ----------
_MADE: dict = {}


def _transformers_callback():
    try:
        from transformers import TrainerCallback
    except ImportError:
        raise _missing("TransformersCallback", "transformers", "transformers") from None

    class TransformersCallback(TrainerCallback):
        """A transformers ``TrainerCallback``: a :class:`Monitor` of the Trainer's model from the start of
        training (step 0) to its end; ``unit="step"`` counts the Trainer's ``global_step`` (optimizer steps),
        ``unit="epoch"`` its epochs. Takes :class:`Monitor`'s keywords (``dataset``, ``every``, ``unit``,
        ``layers``, ``run_id``, ``tensorboard`` …); :attr:`monitor` is the Monitor once training started."""

        def __init__(self, **monitor_kwargs):
            self.kwargs, self.monitor = monitor_kwargs, None

        def on_train_begin(self, args, state, control, model=None, **kwargs):
            self.monitor = Monitor(model, **self.kwargs)
            self.monitor.step(state.global_step, state.epoch or 0.0)

        def on_step_end(self, args, state, control, **kwargs):
            if self.monitor.unit == "step":
                self.monitor.step(state.global_step, state.epoch)

        def on_epoch_end(self, args, state, control, **kwargs):
            self.monitor.step(state.global_step, state.epoch)

        def on_train_end(self, args, state, control, **kwargs):
            self.monitor.close()

    return TransformersCallback


def _lightning_callback():
    try:
        from lightning.pytorch import Callback
    except ImportError:
        raise _missing("LightningCallback", "lightning", "'hubscan[lightning]'") from None

    class LightningCallback(Callback):
        """A Lightning ``Callback``: a :class:`Monitor` of the ``LightningModule`` from ``on_fit_start`` (step 0)
        to ``on_fit_end`` / ``teardown``; ``unit="step"`` counts ``trainer.global_step`` (optimizer steps),
        ``unit="epoch"`` finished epochs. Takes :class:`Monitor`'s keywords; :attr:`monitor` is the Monitor
        once fitting started. Extra ``hubscan[lightning]``."""

        def __init__(self, **monitor_kwargs):
            self.kwargs, self.monitor = monitor_kwargs, None

        def on_fit_start(self, trainer, pl_module):
            self.monitor = Monitor(pl_module, **self.kwargs)
            self.monitor.step(trainer.global_step, float(trainer.current_epoch))

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            if self.monitor.unit == "step":
                per_epoch = trainer.num_training_batches
                done = (batch_idx + 1) / per_epoch if per_epoch and math.isfinite(per_epoch) else 0.0
                self.monitor.step(trainer.global_step, trainer.current_epoch + done)

        def on_train_epoch_end(self, trainer, pl_module):
            self.monitor.step(trainer.global_step, float(trainer.current_epoch + 1))

        def on_fit_end(self, trainer, pl_module):
            self.monitor.close()

        def teardown(self, trainer, pl_module, stage):
            if self.monitor is not None:
                self.monitor.close()

    return LightningCallback


_FACTORIES = {"TransformersCallback": _transformers_callback, "LightningCallback": _lightning_callback}


def __getattr__(name):  # the callbacks: their base classes are imported when first asked for
    if name in _FACTORIES:
        if name not in _MADE:
            cls = _FACTORIES[name]()
            cls.__qualname__, cls.__module__ = name, __name__
            _MADE[name] = cls
        return _MADE[name]
    raise AttributeError(name)


__all__ = ["Monitor", "TransformersCallback", "LightningCallback", "new_run_id", "TABLE", "UNITS"]  # noqa: F822 - module __getattr__
