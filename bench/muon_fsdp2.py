"""Muon's optimizer step under FSDP2 against one process: what gathering whole matrices and spreading Newton-Schulz costs.

    python bench/muon_fsdp2.py                                   # shapes-cpu's matrices, on this machine
    python bench/muon_fsdp2.py --out bench/results/muon_fsdp2_epyc2core.json

Rows (milliseconds per GroupedMuon step over the preset's block matrices, random gradients, best of three):
one process, whole matrices; two gloo processes with the matrices sharded by FSDP2's fully_shard, each rank
orthogonalising half of them (prx-nb); and the same two processes with every rank orthogonalising every matrix (what
spreading the work saves). One thread per process, so the two-process rows use the machine's two cores.
"""
import argparse, json, os, subprocess, sys, time
from pathlib import Path

import torch


def step_ms(opt, reps: int) -> float:
    "Milliseconds per optimizer step, best of three timings after warm-up."
    for _ in range(3): opt.step()
    best = float("inf")
    for _ in range(3):
        if torch.distributed.is_initialized(): torch.distributed.barrier()
        t = time.perf_counter()
        for _ in range(reps): opt.step()
        best = min(best, (time.perf_counter() - t) / reps * 1e3)
    return best


def worker(preset: str, mode: str, reps: int) -> float:
    "One timing: mode is 'one' (a single process), 'spread' (prx-nb, sharded) or 'every' (sharded, no spreading)."
    import torch.distributed as dist
    from prx_nb.architecture import build_denoiser
    from prx_nb.optim import GroupedMuon
    torch.set_num_threads(1); torch.manual_seed(0)
    model = build_denoiser(preset)
    if mode != "one":
        from torch.distributed.device_mesh import init_device_mesh
        from torch.distributed.fsdp import fully_shard
        dist.init_process_group("gloo")
        mesh = init_device_mesh("cpu", (dist.get_world_size(),))
        for block in model.blocks: fully_shard(block, mesh=mesh)
        fully_shard(model, mesh=mesh)
    mats = [p for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("blocks.")]
    for p in mats: p.grad = torch.randn_like(p)
    opt = GroupedMuon(mats, lr=1e-3, momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="match_rms_adamw")
    if mode == "every":  # every rank gathers and orthogonalises every matrix, then keeps its shard
        from torch.distributed.tensor import DTensor, Shard, distribute_tensor
        from prx_nb.optim import _strides
        def every_rank(ps, directions, coefficients):
            mesh = ps[0].device_mesh
            stacked = [Shard(q.dim + 1) if isinstance(q, Shard) else q for q in ps[0].placements]
            shape = (len(ps), *ps[0].shape)
            whole = DTensor.from_local(directions.contiguous(), mesh, stacked, shape=shape, stride=_strides(shape)).full_tensor()
            return distribute_tensor(opt._ns(whole, *coefficients, opt.ns_dtype), mesh, stacked, src_data_rank=None).to_local()
        opt._orthogonalise_sharded = every_rank
    ms = step_ms(opt, reps)
    if mode != "one": dist.barrier(); dist.destroy_process_group()
    return ms, len(mats), len({tuple(p.shape) for p in mats})


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="shapes-cpu"); ap.add_argument("--reps", type=int, default=10)
    ap.add_argument("--out", help="write the table as JSON here")
    ap.add_argument("--worker", help=argparse.SUPPRESS); ap.add_argument("--result", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.worker:
        ms, n, shapes = worker(a.preset, a.worker, a.reps)
        if int(os.environ.get("RANK", "0")) == 0: Path(a.result).write_text(json.dumps(dict(ms=ms, matrices=n, shapes=shapes)))
        os._exit(0)  # see the speedrun chapter: gloo processes can abort at interpreter exit
    rows, tmp = [], Path(os.environ.get("TMPDIR", "/tmp")) / f"muon-fsdp2-{os.getpid()}.json"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for mode, what in (("one", "one process, whole matrices"), ("spread", "2 processes, FSDP2 shards, Newton-Schulz spread (prx-nb)"),
                       ("every", "2 processes, FSDP2 shards, every rank orthogonalises every matrix")):
        launcher = [sys.executable] if mode == "one" else [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2"]
        subprocess.run([*launcher, __file__, "--preset", a.preset, "--reps", str(a.reps), "--worker", mode, "--result", str(tmp)],
                       check=True, env=env, capture_output=True)
        r = json.loads(tmp.read_text()); rows.append(dict(what=what, ms=r["ms"])); meta = r
    tmp.unlink()
    print(f"{a.preset}: {meta['matrices']} Muon matrices in {meta['shapes']} shapes, 1 thread per process, torch {torch.__version__}")
    print("| what | ms per optimizer step |\n|---|---|")
    for r in rows: print(f"| {r['what']} | {r['ms']:.1f} |")
    if a.out:
        Path(a.out).write_text(json.dumps(dict(preset=a.preset, matrices=meta["matrices"], shapes=meta["shapes"], torch=torch.__version__,
                                               rows=rows), indent=1))


if __name__ == "__main__":
    main()
