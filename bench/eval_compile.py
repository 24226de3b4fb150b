"""How long a saved pipeline takes to judge one chunk of ShapesEval prompts, eager and under `torch.compile`.

    OMP_NUM_THREADS=2 python bench/eval_compile.py runs/shapes-cpu-10min --out bench/results/eval_compile_epyc2core.json

A run's judgement samples its prompts in chunks (60 a call in `evaluate`) with the recorded sampler; this
times one such chunk of tuning prompts (seed 999) both ways on the same weights, after a warm-up call each, and prints
the compile warm-up that a run would pay once. Images differ in rounding only (bf16 kernels fuse differently).
"""
import argparse, json, time
from pathlib import Path

import torch

from prx_nb.architecture import generate
from prx_nb.eval import shapes_eval_prompts
from prx_nb.runs import load_pipeline


def timed(pipe, prompts: list[str], size: int, steps: int, guidance_scale: float) -> float:
    "Seconds to sample `prompts` at `steps` steps."
    start = time.perf_counter()
    generate(pipe, prompts, list(range(len(prompts))), size, steps, guidance_scale)
    return time.perf_counter() - start


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a speedrun folder (its pipeline/)")
    p.add_argument("--prompts", type=int, default=60, help="prompts in the chunk")
    p.add_argument("--steps", type=int, default=None, help="sampling steps (the recorded ones by default)")
    p.add_argument("--out", type=Path, default=None, help="a JSON file for the figures")
    a = p.parse_args()
    pipe, sampling = load_pipeline(a.run / "pipeline")
    steps, size, scale = a.steps or sampling["steps"], sampling["size"], sampling["guidance_scale"]
    per_task = -(-a.prompts // 4)  # the four tasks' prompts, as a run's judgement mixes them
    prompts = [it["prompt"] for it in shapes_eval_prompts(per_task, size, 999)][: a.prompts]
    timed(pipe, prompts, size, 2, scale)  # warm-up: allocations, the text tower's first call
    eager = timed(pipe, prompts, size, steps, scale)
    pipe.transformer = torch.compile(pipe.transformer)
    warm_up = timed(pipe, prompts, size, 2, scale)  # compiles for this chunk's shapes
    compiled = timed(pipe, prompts, size, steps, scale)
    row = dict(run=str(a.run), prompts=len(prompts), steps=steps, threads=torch.get_num_threads(),
               eager_s=round(eager, 2), compile_warm_up_s=round(warm_up, 1), compiled_s=round(compiled, 2),
               speedup=round(eager / compiled, 2))
    print(f"{'prompts':>7s} {'steps':>5s} {'eager s':>8s} {'warm-up s':>9s} {'compiled s':>10s} {'speedup':>7s}")
    print(f"{row['prompts']:7d} {steps:5d} {eager:8.1f} {warm_up:9.1f} {compiled:10.1f} {row['speedup']:6.2f}x")
    if a.out:
        a.out.parent.mkdir(parents=True, exist_ok=True)
        a.out.write_text(json.dumps(row, indent=1) + "\n")


if __name__ == "__main__":
    main()
