"""ShapesEval of one saved pipeline under several sampler settings, on the tuning prompts.

    python bench/sampler_sweep.py runs/shapes-cpu --grid 40:3,40:1.5,40:5,20:3,80:3,40:3:2 \
        --out bench/results/tuning/sampler_shapes-cpu.jsonl

Each setting is `steps:guidance[:shift[:from[:until]]]`: the scheduler's shift (the recorded one when left out) and a
guidance interval, classifier-free guidance only at noise levels from <= t <= until (1 is pure noise; the defaults 0
and 1 guide every step; outside the interval the conditional prediction alone, as at guidance 1). Prompts are
ShapesEval's canonical prompts drawn with `--seed` (999, the tuning set, by default; the benchmark's 1234 is refused: a
sampler is chosen on tuning prompts). The same prompts and starting noise serve every setting, so rows differ by the
sampler alone. `--stochastic on|off` overrides the saved scheduler's stochastic sampling for every setting.
"""
import argparse, contextlib, json, time
from pathlib import Path

import torch

from prx_nb.architecture import generate, make_scheduler
from prx_nb.config import Config
from prx_nb.eval import score_images, shapes_eval_prompts, standard_errors
from prx_nb.runs import load_pipeline


def parse_setting(text: str) -> dict:
    "`steps:guidance[:shift[:from[:until]]]` as a dict."
    parts = text.split(":")
    if len(parts) not in (2, 3, 4, 5):
        example = "e.g. 40:3 or 40:3:1:0:0.6"
        raise SystemExit(f"sampler setting {text!r}: write steps:guidance[:shift[:from[:until]]], {example}")
    setting = dict(steps=int(parts[0]), guidance_scale=float(parts[1]))
    setting |= {"shift": float(parts[2])} if len(parts) >= 3 else {}
    setting |= {"guidance_from": float(parts[3])} if len(parts) >= 4 else {}
    setting |= {"guidance_until": float(parts[4])} if len(parts) == 5 else {}
    if not 0 <= setting.get("guidance_from", 0.0) <= setting.get("guidance_until", 1.0) <= 1:
        raise SystemExit(f"sampler setting {text!r}: the guidance interval needs 0 <= from <= until <= 1")
    return setting


@contextlib.contextmanager
def guidance_from(pipe, t_from: float, t_until: float = 1.0):
    "Within the block, guidance acts only at noise levels t_from <= t <= t_until: elsewhere both halves conditional."

    def conditional_only(module, args, kwargs, output):
        if t_from <= float(kwargs["timestep"][0]) <= t_until:
            return output
        half = output[0].shape[0] // 2  # the pipeline batches [unconditional, conditional]
        return (torch.cat([output[0][half:], output[0][half:]]), *output[1:])

    banded = t_from > 0 or t_until < 1
    handle = pipe.transformer.register_forward_hook(conditional_only, with_kwargs=True) if banded else None
    try:
        yield
    finally:
        if handle is not None:
            handle.remove()


def sample_draw(pipe, items: list[dict], seed: int, size: int, steps: int, guidance_scale: float,
                chunk: int = 100) -> list:
    "One image per prompt of `items`, prompt i from noise `seed + i`, `chunk` prompts a call."
    images = []
    for i in range(0, len(items), chunk):
        part = items[i : i + chunk]
        seeds = [seed + i + j for j in range(len(part))]
        images += generate(pipe, [it["prompt"] for it in part], seeds, size, steps, guidance_scale)
    return images


def sweep_row(pipe, sampling: dict, items: list[dict], seed: int, setting: dict) -> dict:
    "ShapesEval of `pipe` on `items` with one sampler setting."
    stochastic = setting.get("stochastic", sampling.get("stochastic", False))
    pipe.scheduler = make_scheduler(setting.get("shift", sampling.get("shift", 1.0)), stochastic)
    start = time.time()
    t_from, t_until = setting.get("guidance_from", 0.0), setting.get("guidance_until", 1.0)
    guided = setting["guidance_scale"] > 1
    with guidance_from(pipe, t_from if guided else 0.0, t_until if guided else 1.0):
        images = sample_draw(pipe, items, seed, sampling["size"], setting["steps"], setting["guidance_scale"])
    scores = score_images(items, images)
    shift = setting.get("shift", sampling.get("shift", 1.0))
    return dict(setting, shift=shift, stochastic=stochastic, guidance_from=t_from, guidance_until=t_until, **scores,
                overall_se=standard_errors(scores)["overall"], seconds=round(time.time() - start, 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run", type=Path, help="a speedrun folder (its pipeline/)")
    p.add_argument("--grid", required=True, help="comma-separated steps:guidance[:shift[:from[:until]]] settings")
    p.add_argument("--n-per-task", type=int, default=100)
    p.add_argument("--seed", type=int, default=999)
    p.add_argument("--out", type=Path, required=True, help="JSON lines, one row a setting")
    p.add_argument("--stochastic", choices=("saved", "on", "off"), default="saved", help="stochastic sampling")
    a = p.parse_args()
    if a.seed == Config().eval.seed:
        raise SystemExit(f"--seed {a.seed} is the benchmark's: choose the sampler on other prompts (999 by default)")
    settings = [parse_setting(text) for text in a.grid.split(",")]  # every setting checked before the first is sampled
    if a.stochastic != "saved":
        settings = [dict(s, stochastic=a.stochastic == "on") for s in settings]
    pipe, sampling = load_pipeline(a.run / "pipeline")
    items = shapes_eval_prompts(a.n_per_task, sampling["size"], a.seed)
    rows = []
    for setting in settings:
        rows.append(dict(run=str(a.run), seed=a.seed, **sweep_row(pipe, sampling, items, a.seed, setting)))
        print(json.dumps(rows[-1]), flush=True)
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text("".join(json.dumps(r) + "\n" for r in rows))


if __name__ == "__main__":
    main()
