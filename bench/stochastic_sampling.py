"""Deterministic against stochastic sampling of saved pipelines, on the tuning prompts.

    python bench/stochastic_sampling.py runs/a runs/b --grid 0:40:3,1:40:3,1:80:2.5 --out log.jsonl

Each setting is `eta:steps:guidance`. A step takes the denoiser's clean image x0 and moves to the next noise level as
`(1 - t') x0 + t' e`, where e mixes the noise the current sample implies (share sqrt(1 - eta^2)) with fresh noise (share
eta): eta 0 is the deterministic Euler step prx-nb sampled with before, eta 1 is diffusers' `stochastic_sampling=True`,
the setting a pipeline can save. Prompts are ShapesEval's canonical prompts drawn with seed 999 (the tuning set), the
starting noise of prompt i is seeded 999 + i as in the speedrun's judge, and the fresh noise comes from torch's
generator seeded 0 at the start of every setting, so a row is reproducible. Rows are appended to --out.
"""
import argparse, json, time
from pathlib import Path

import torch
from diffusers import FlowMatchEulerDiscreteScheduler
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteSchedulerOutput

from prx_nb.architecture import generate
from prx_nb.eval import score_images, shapes_eval_prompts, standard_errors
from prx_nb.runs import load_pipeline


class PartlyStochastic(FlowMatchEulerDiscreteScheduler):
    "Flow-matching Euler steps that renoise with a share `eta` of fresh noise (eta 1: diffusers' stochastic_sampling)."

    eta = 0.0

    def step(self, model_output, timestep, sample, generator=None, return_dict=True, **kwargs):
        if self.step_index is None:
            self._init_step_index(timestep)
        t, t_next = self.sigmas[self.step_index], self.sigmas[self.step_index + 1]
        x0 = sample.float() - t * model_output.float()
        implied = (sample.float() - (1 - t) * x0) / t
        fresh = torch.randn(sample.shape, generator=generator, device=sample.device)
        noise = (1 - self.eta**2) ** 0.5 * implied + self.eta * fresh
        prev = ((1 - t_next) * x0 + t_next * noise).to(model_output.dtype)
        self._step_index += 1
        return FlowMatchEulerDiscreteSchedulerOutput(prev_sample=prev) if return_dict else (prev,)


def row(pipe, sampling: dict, items: list[dict], eta: float, steps: int, guidance: float) -> dict:
    "ShapesEval of `pipe` on `items` with one setting."
    pipe.scheduler = PartlyStochastic(shift=sampling.get("shift", 1.0), use_dynamic_shifting=False)
    pipe.scheduler.eta = eta
    torch.manual_seed(0)
    start, images = time.time(), []
    for i in range(0, len(items), 100):
        part = items[i : i + 100]
        images += generate(pipe, [it["prompt"] for it in part], [999 + i + j for j in range(len(part))],
                           sampling["size"], steps, guidance)
    scores = score_images(items, images)
    return dict(eta=eta, steps=steps, guidance_scale=guidance, **scores, overall_se=standard_errors(scores)["overall"],
                seconds=round(time.time() - start, 1))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("runs", type=Path, nargs="+", help="speedrun folders (their pipeline/)")
    p.add_argument("--grid", required=True, help="comma-separated eta:steps:guidance settings")
    p.add_argument("--n-per-task", type=int, default=100)
    p.add_argument("--out", type=Path, required=True, help="JSON lines, one row a run and setting (appended)")
    a = p.parse_args()
    settings = [tuple(float(x) for x in s.split(":")) for s in a.grid.split(",")]
    if any(len(s) != 3 or not 0 <= s[0] <= 1 for s in settings):
        raise SystemExit(f"--grid {a.grid!r}: write eta:steps:guidance settings with 0 <= eta <= 1, e.g. 1:80:2.5")
    for run in a.runs:
        pipe, sampling = load_pipeline(run / "pipeline")
        items = shapes_eval_prompts(a.n_per_task, sampling["size"], 999)
        for eta, steps, guidance in settings:
            r = dict(run=run.name, seed=999, **row(pipe, sampling, items, eta, int(steps), guidance))
            print(json.dumps(r), flush=True)
            with a.out.open("a") as f:
                f.write(json.dumps(r) + "\n")


if __name__ == "__main__":
    main()
