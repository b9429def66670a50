#!/usr/bin/env python
"""Cost of hubscan.monitor: analyzing the model every epoch, as a fraction of the epoch's time, on CPU.

Usage::

    python benchmarks/bench_monitor.py [--epochs 4] [--threads N] [--batch-sizes 2,8,32,128]
                                       [--seq-train 512] [--width 128] [--no-dataset] [--traps]
                                       [--mp-fit on|off] [--flush-seconds S] [--clock wall|cpu]

Two models, each trained for ``--epochs`` epochs with a :class:`hubscan.monitor.Monitor` (``every=1,
unit="epoch"``, its defaults: float32 on CPU, every layer, the MP fit; the rows committed to a ``training``
Delta table in a temporary dataset unless ``--no-dataset``, a commit after every analysis unless
``--flush-seconds``):

1. **the batch-size experiment's MLP** (:func:`hubscan.experiments.batch_size.build_model`: 64→256→256→10) on
   its data (scikit-learn's digits, 1,347 training images, :func:`hubscan.demo.digits.digits_split`), plain
   SGD at the experiment's learning rate (0.05), at each of ``--batch-sizes`` (the experiment sweeps 2 … 512:
   the smaller the batch the more steps an epoch takes);
2. **a 12-layer transformer at small width** (``torch.nn.TransformerEncoder``, d_model ``--width``, 4 heads,
   feed-forward 4×, pre-norm, vocabulary 512, causal mask, tied-free LM head) on next-token prediction over
   ``--seq-train`` random sequences of 64 tokens, batch 16, AdamW.

For each, the time of the epochs' training (forward, backward, step: ``time.perf_counter`` around the loop)
and of each end-of-epoch analysis (``Monitor.step``: ``hubscan.analyze`` of the module in memory + the Delta
commit) are measured in the same run; the first epoch and its analysis are left out (warm-up: thread pools,
lazy imports, the Delta table's creation). Prints one row per configuration: median epoch seconds, median
analysis seconds, their ratio (the acceptance figure: ≤ 10 %), the layers analyzed.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time


def _run(model, epoch_fn, epochs: int, dataset: str | None, clock, **monitor_kwargs) -> tuple[list, list, int]:
    from hubscan.monitor import Monitor

    ep_times, an_times = [], []
    with Monitor(model, dataset, every=1, unit="epoch", **monitor_kwargs) as mon:
        step = 0
        for epoch in range(1, epochs + 1):
            t = clock()
            step += epoch_fn()
            ep_times.append(clock() - t)
            t = clock()
            res = mon.step(step, epoch)
            an_times.append(clock() - t)
            assert res is not None
        layers = sum(r.status == "success" for r in res.rows)
    return ep_times[1:], an_times[1:], layers


def mlp_epochs(batch_size: int):
    import torch
    import torch.nn.functional as F

    from hubscan.demo.digits import digits_split
    from hubscan.experiments.batch_size import build_model

    Xtr, ytr, _, _ = (torch.from_numpy(a) for a in digits_split(0))
    torch.manual_seed(0)
    model = build_model("mlp", 256, 64)
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    gen = torch.Generator().manual_seed(0)

    def epoch() -> int:
        perm, steps = torch.randperm(len(Xtr), generator=gen), 0
        for i in range(0, len(Xtr), batch_size):
            idx = perm[i:i + batch_size]
            loss = F.cross_entropy(model(Xtr[idx]), ytr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        return steps
    return model, epoch


def transformer_epochs(width: int, n_seq: int, layers: int = 12, vocab: int = 512, seq: int = 64, batch: int = 16):
    import torch
    from torch import nn

    torch.manual_seed(0)

    class LM(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.Embedding(vocab, width)
            self.pos = nn.Parameter(torch.zeros(seq, width))
            block = nn.TransformerEncoderLayer(width, 4, 4 * width, dropout=0.0, batch_first=True, norm_first=True)
            self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
            self.head = nn.Linear(width, vocab)

        def forward(self, x):
            mask = nn.Transformer.generate_square_subsequent_mask(x.shape[1])
            return self.head(self.blocks(self.embed(x) + self.pos[:x.shape[1]], mask=mask, is_causal=True))

    model = LM()
    data = torch.randint(0, vocab, (n_seq, seq + 1), generator=torch.Generator().manual_seed(1))
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4)

    def epoch() -> int:
        steps = 0
        for i in range(0, n_seq, batch):
            x = data[i:i + batch]
            loss = nn.functional.cross_entropy(model(x[:, :-1]).reshape(-1, vocab), x[:, 1:].reshape(-1))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
        return steps
    return model, epoch


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--batch-sizes", default="2,8,32,128")
    ap.add_argument("--seq-train", type=int, default=512)
    ap.add_argument("--width", type=int, default=128)
    ap.add_argument("--no-dataset", action="store_true", help="rows in memory only (no Delta commit)")
    ap.add_argument("--traps", action="store_true", help="also the correlation traps (one more eigendecomposition)")
    ap.add_argument("--mp-fit", choices=("on", "off"), default="on", help="the MP bulk fit (Monitor default: on)")
    ap.add_argument("--flush-seconds", type=float, default=0.0,
                    help="Monitor's flush_seconds (default here 0: a Delta commit after every analysis, the worst case)")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time, or CPU seconds of the process (with --threads 1: ratios that hold on a busy machine)")
    args = ap.parse_args()
    import torch
    torch.set_num_threads(args.threads)
    extra = {"traps": True} if args.traps else {}
    if args.mp_fit == "off":
        extra["mp_fit"] = False
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    print(f"threads {args.threads}, load average {os.getloadavg()[0]:.2f}, torch {torch.__version__}, epochs "
          f"{args.epochs} (first left out), dataset {'no' if args.no_dataset else 'yes'}"
          f"{', traps' if args.traps else ''}, MP fit {args.mp_fit}, flush_seconds {args.flush_seconds:g}, "
          f"clock {args.clock}")
    print(f"{'model':<34} {'epoch s':>9} {'analysis s':>11} {'ratio':>7} {'layers':>7}")
    with tempfile.TemporaryDirectory(prefix="bench-monitor-") as tmp:
        configs = [(f"batch-size MLP 64-256-256-10, B={b}", lambda b=b: mlp_epochs(b))
                   for b in (int(s) for s in args.batch_sizes.split(","))]
        configs.append((f"transformer 12 x d{args.width}, {args.seq_train} seq",
                        lambda: transformer_epochs(args.width, args.seq_train)))
        for i, (label, make) in enumerate(configs):
            model, epoch = make()
            dataset = None if args.no_dataset else os.path.join(tmp, f"ds{i}")
            ep, an, layers = _run(model, epoch, args.epochs, dataset, clock, flush_seconds=args.flush_seconds, **extra)
            e, a = statistics.median(ep), statistics.median(an)
            print(f"{label:<34} {e:>9.3f} {a:>11.3f} {a / e:>7.1%} {layers:>7}", flush=True)


if __name__ == "__main__":
    main()
