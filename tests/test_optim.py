"GroupedMuon as `prx-nb train` runs it (compiled) against torch's Muon, and checkpoints moving between the two."
import copy
import torch
from prx_nb.architecture import build_denoiser
from prx_nb.optim import GroupedMuon

KW = dict(lr=4e-3, momentum=0.95, nesterov=True, ns_steps=5, adjust_lr_fn="match_rms_adamw")
BF16 = dict(ns_dtype=torch.bfloat16)  # torch's Muon orthogonalises in bf16 on every machine; ours follows the machine


def _pair():
    torch.manual_seed(0)
    a, b = build_denoiser("shapes-tiny"), build_denoiser("shapes-tiny"); b.load_state_dict(a.state_dict())
    mats = lambda m: [p for n, p in m.named_parameters() if p.ndim == 2 and n.startswith("blocks.")]
    return mats(a), mats(b)


def test_compiled_matches_torch_muon():
    ref, new = _pair(); w0 = [p.detach().clone() for p in ref]
    o_ref, o_new = torch.optim.Muon(ref, **KW), GroupedMuon(new, compile=True, **BF16, **KW)
    for _ in range(3):
        for p, q in zip(ref, new): p.grad = torch.randn_like(p); q.grad = p.grad.clone()
        o_ref.step(); o_new.step()
    for p, q, w in zip(ref, new, w0):  # compiled bf16 kernels round differently: within a few percent of the update
        moved = (p.detach() - w).abs().max()
        assert (p.detach() - q.detach()).abs().max() < 0.1 * moved


def test_state_moves_between_optimizers():
    ref, new = _pair()
    o_ref = torch.optim.Muon(ref, **KW)
    for p in ref: p.grad = torch.randn_like(p)
    o_ref.step()
    o_new = GroupedMuon(new, **BF16, **KW); o_new.load_state_dict(copy.deepcopy(o_ref.state_dict()))  # a checkpoint of torch's Muon resumes here (a copy: as read from disk)
    for p, q in zip(ref, new): p.grad = torch.randn_like(p); q.grad = p.grad.clone(); q.data.copy_(p.data)
    o_ref.step(); o_new.step()
    for p, q in zip(ref, new): torch.testing.assert_close(q.detach(), p.detach())
    back = torch.optim.Muon(ref, **KW); back.load_state_dict(copy.deepcopy(o_new.state_dict()))  # and the other way
    assert back.state_dict()["state"][0]["momentum_buffer"].shape == ref[0].shape
