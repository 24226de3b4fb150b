"""Training-step throughput of a preset with each attention backend, compiled or not.

    python bench/attention.py --preset shapes-cpu --batch-size 128 --steps 10

Prints a table (images/s per backend) and writes JSON with --out. Numbers depend on the machine: run it where you train.
"""
import argparse, json, time
import torch
from prx_nb.architecture import build_denoiser, set_attention, model_config


def bench(preset, backend, compile_, bs, steps, size, text_tokens=23):
    "Images/s of forward+backward+AdamW steps under bf16 autocast."
    torch.manual_seed(0)
    m = set_attention(build_denoiser(preset), backend)
    opt = torch.optim.AdamW(m.parameters(), 1e-3); f = torch.compile(m) if compile_ else m
    c = model_config(preset)
    x, txt, t = torch.randn(bs, 3, size, size), torch.randn(bs, text_tokens, c["context_in_dim"]), torch.rand(bs)
    mask = torch.ones(bs, text_tokens, dtype=torch.bool); mask[:, text_tokens // 2:] = False
    def step():
        with torch.autocast("cpu", dtype=torch.bfloat16): out = f(x, t, txt, mask).sample.float()
        (out - x).pow(2).mean().backward(); opt.step(); opt.zero_grad()
    for _ in range(3): step()
    t0 = time.perf_counter()
    for _ in range(steps): step()
    return bs * steps / (time.perf_counter() - t0)


if __name__ == "__main__":
    ap = argparse.ArgumentParser(); ap.add_argument("--preset", default="shapes-cpu"); ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--steps", type=int, default=10); ap.add_argument("--size", type=int, default=32); ap.add_argument("--out")
    a = ap.parse_args(); rows = []
    for backend in ("native", "_native_math"):
        for comp in (False, True):
            rows.append(dict(backend=backend, compile=comp, images_per_s=round(bench(a.preset, backend, comp, a.batch_size, a.steps, a.size), 1)))
            print(f"{backend:14s} compile={str(comp):5s} {rows[-1]['images_per_s']:8.1f} images/s", flush=True)
    if a.out: json.dump(dict(preset=a.preset, batch_size=a.batch_size, threads=torch.get_num_threads(), rows=rows), open(a.out, "w"), indent=1)
