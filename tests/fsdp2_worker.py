"""FSDP2 on CPU (gloo), launched by tests/test_distributed.py under torchrun: a few steps of prx-nb's flow-matching loss on
the shapes-tiny denoiser, sharded per PRX block and at the root with torch's `fully_shard` (what accelerate's FSDP2 plugin
does on GPUs), with prx-nb's EMA on the sharded weights. Rank 0 writes the losses, the gathered weights and the gathered EMA.
OPTIMIZER: adamw; muon (PRX's split: prx-nb's GroupedMuon on the blocks' matrices, AdamW on the rest); torch-muon (the same
split with torch.optim.Muon, one process only). With Muon a lone 7 x 6 matrix (unevenly sharded: 4 + 3 rows) takes 3 steps too.
Usage: python -m torch.distributed.run --nproc_per_node N tests/fsdp2_worker.py OUT STEPS shard|plain [OPTIMIZER]"""
import os, sys
import torch
import torch.distributed as dist
from torch.distributed.tensor import DTensor
from prx_nb.architecture import build_denoiser
from prx_nb.flow import sample_timesteps, add_noise, x_pred_loss
from prx_nb.tricks import DenoiserEMA
from prx_nb.optim import GroupedMuon

out, steps, shard = sys.argv[1], int(sys.argv[2]), sys.argv[3] == "shard"
optimizer = sys.argv[4] if len(sys.argv) > 4 else "adamw"
world, rank = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0"))
torch.manual_seed(0); torch.set_num_threads(1)
model = build_denoiser("shapes-tiny", context_in_dim=32)
with torch.no_grad():  # adaLN-Zero starts every block as the identity; random modulation makes every weight matter
    for n, p in model.named_parameters():
        if "modulation" in n and n.endswith("weight"): p.normal_(0, 0.05)
if shard:
    from torch.distributed.fsdp import fully_shard
    from torch.distributed.device_mesh import init_device_mesh
    dist.init_process_group("gloo"); mesh = init_device_mesh("cpu", (world,))
    for block in model.blocks: fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)
ema = DenoiserEMA(model, decay=0.9, every=1)
MUON = dict(lr=3e-3, momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="match_rms_adamw", weight_decay=0.0)
Muon = torch.optim.Muon if optimizer == "torch-muon" else GroupedMuon
matrices = [p for n, p in model.named_parameters() if p.ndim == 2 and n.startswith("blocks.")] if optimizer != "adamw" else []
rest = [p for p in model.parameters() if all(p is not q for q in matrices)]
BF16 = {} if Muon is torch.optim.Muon else dict(ns_dtype=torch.bfloat16)  # as torch's Muon, on every machine
opts = [torch.optim.AdamW(rest, lr=1e-3, betas=(0.9, 0.95))] + ([Muon(matrices, **BF16, **MUON)] if matrices else [])
orthogonalised = [0]  # matrices this rank ran Newton-Schulz on
if isinstance(opts[-1], GroupedMuon):
    ns = opts[-1]._ns
    opts[-1]._ns = lambda G, *a: (orthogonalised.__setitem__(0, orthogonalised[0] + G.shape[0]), ns(G, *a))[1]
G = 8; b = G // world; sl = slice(rank * b, (rank + 1) * b); g = torch.Generator().manual_seed(1)
losses = []
for step in range(1, steps + 1):  # the same global batch whatever the number of processes; each rank takes its slice
    x0, txt, eps = torch.rand(G, 3, 32, 32, generator=g) * 2 - 1, torch.randn(G, 5, 32, generator=g), torch.randn(G, 3, 32, 32, generator=g)
    t = sample_timesteps(G, 3.0, generator=g)
    x_t = add_noise(x0[sl], t[sl], eps[sl])
    loss = x_pred_loss(model(x_t, t[sl], txt[sl]).sample, x0[sl], x_t, t[sl]).mean()
    loss.backward(); torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    for opt in opts: opt.step(); opt.zero_grad()
    ema.update(model, step)
    gl = loss.detach().clone()
    if dist.is_initialized(): dist.all_reduce(gl); gl /= world
    losses.append(gl.item())
sd = ema.state_dict(); again = DenoiserEMA(model, decay=0.9, every=1); again.load_state_dict(sd)  # a checkpoint round trip
avg = {k: v.clone() for k, v in (ema.averaged() or torch.nn.Module()).state_dict().items()}  # every rank takes part in the gather
avg2 = {k: v.clone() for k, v in (again.averaged() or torch.nn.Module()).state_dict().items()}
full = {k: v.full_tensor() if isinstance(v, DTensor) else v.detach() for k, v in model.state_dict().items()}
lone = None
if optimizer != "adamw":  # a matrix whose rows do not split evenly
    torch.manual_seed(3); odd = torch.nn.Linear(6, 7, bias=False); grads = [torch.randn(7, 6) for _ in range(3)]
    if shard:
        from torch.distributed.tensor import distribute_tensor
        fully_shard(odd, mesh=mesh)
    o = Muon(odd.parameters(), **BF16, **MUON)
    for gr in grads:
        odd.weight.grad = distribute_tensor(gr, mesh, odd.weight.placements) if shard else gr
        o.step()
    lone = odd.weight.full_tensor() if shard else odd.weight.detach()
counts = [torch.zeros(1, dtype=torch.long) for _ in range(world)]
if dist.is_initialized(): dist.all_gather(counts, torch.tensor([orthogonalised[0]]))
else: counts = [torch.tensor([orthogonalised[0]])]
if rank == 0: torch.save(dict(losses=losses, weights=full, ema=avg, ema_reloaded=avg2, sharded=ema.sharded, world=world, lone=lone,
                              orthogonalised=[int(c) for c in counts]), out)
if dist.is_initialized(): dist.barrier(); dist.destroy_process_group()
os._exit(0)  # see the speedrun chapter: an exit-time abort of gloo processes seen on this machine
