"""Muon's optimizer step, torch's one-matrix-at-a-time against prx-nb's GroupedMuon, and what it does to the training loop.

    python bench/muon.py                                  # shapes-cpu's matrices, on this machine
    python bench/muon.py --out bench/results/muon_epyc2core.json

Rows: one optimizer step over the preset's Muon matrices (random gradients; torch.optim.Muon, GroupedMuon eager, GroupedMuon
compiled as `prx-nb train` runs it), then the images/s of the real training loop (`prx-nb train` on a small Shapes build)
with each optimizer.
"""
import argparse, json, sys, time
from pathlib import Path

import torch
import prx_nb.optim as optim
from prx_nb.architecture import build_denoiser
from prx_nb.config import load_config

sys.path.insert(0, str(Path(__file__).parent))
from train_step import loop_rate


def step_ms(opt, reps:int=30)->float:
    "Milliseconds per optimizer step, best of three timings after warm-up."
    for _ in range(5): opt.step()
    best = float("inf")
    for _ in range(3):
        t = time.perf_counter()
        for _ in range(reps): opt.step()
        best = min(best, (time.perf_counter() - t) / reps * 1e3)
    return best


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="shapes-cpu"); ap.add_argument("--loop-steps", type=int, default=150)
    ap.add_argument("--out", help="write the table as JSON here")
    a = ap.parse_args()
    cfg = load_config(a.preset); T = cfg.train
    torch.manual_seed(0); model = build_denoiser(cfg.model.preset)
    mats = [p for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("blocks.")]
    for p in mats: p.grad = torch.randn_like(p)
    kw = dict(lr=T.muon_lr or T.lr, momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="match_rms_adamw")
    rows = [dict(what="torch.optim.Muon step", ms=step_ms(torch.optim.Muon(mats, **kw))),
            dict(what="GroupedMuon step, eager", ms=step_ms(optim.GroupedMuon(mats, **kw))),
            dict(what="GroupedMuon step, compiled", ms=step_ms(optim.GroupedMuon(mats, compile=True, **kw)))]
    grouped = optim.GroupedMuon
    optim.GroupedMuon = lambda ps, compile=False, **k: torch.optim.Muon(ps, **k)  # make_optimizers builds torch's Muon
    try: rows.append(dict(what="training loop, torch.optim.Muon", images_per_s=loop_rate(a.preset, T.batch_size, a.loop_steps)))
    finally: optim.GroupedMuon = grouped
    rows.append(dict(what="training loop, GroupedMuon (prx-nb)", images_per_s=loop_rate(a.preset, T.batch_size, a.loop_steps)))
    for r in rows:
        if "images_per_s" in r: r["ms_per_step"] = 1e3 * T.batch_size / r["images_per_s"]
    n_shapes = len({tuple(p.shape) for p in mats})
    print(f"{a.preset}: {len(mats)} Muon matrices in {n_shapes} shapes, batch {T.batch_size}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print("| what | optimizer ms/step | loop ms/step | images/s |\n|---|---|---|---|")
    for r in rows:
        print(f"| {r['what']} | {r['ms']:.1f} |  |  |" if "ms" in r else f"| {r['what']} |  | {r['ms_per_step']:.1f} | {r['images_per_s']:.0f} |")
    lo = rows[-1]["images_per_s"] / rows[-2]["images_per_s"]
    print(f"training loop speed-up: {lo:.2f}x")
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(json.dumps(dict(preset=a.preset, matrices=len(mats), shapes=n_shapes, batch_size=T.batch_size, threads=torch.get_num_threads(),
                                               torch=torch.__version__, rows=rows, loop_speedup=lo), indent=1))


if __name__ == "__main__": main()
