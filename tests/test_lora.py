"A LoRA trained with prx_nb is a plain peft adapter: it loads onto the base transformer in a process that never imports prx_nb."
import copy, json, sys, textwrap
import pytest
import torch
from conftest import run

pytest.importorskip("peft")
from diffusers import PRXTransformer2DModel
from prx_nb.architecture import build_denoiser
from prx_nb.lora import add_lora, lora_target_modules, merge_lora, save_lora

SCRIPT = textwrap.dedent('''
    import json, sys, torch
    from diffusers import PRXTransformer2DModel
    from peft import PeftModel
    d = sys.argv[1]
    inp = torch.load(d + "/inputs.pt")
    model = PeftModel.from_pretrained(PRXTransformer2DModel.from_pretrained(d + "/base"), d + "/adapter").eval()
    with torch.no_grad(): out = model(**inp).sample
    n_lora = sum("lora_" in n for n, _ in model.named_parameters())
    merged = PRXTransformer2DModel.from_pretrained(d + "/merged").eval()
    with torch.no_grad(): out_merged = merged(**inp).sample
    unloaded = model.merge_and_unload()
    with torch.no_grad(): out_unloaded = unloaded(**inp).sample
    torch.save(dict(adapter=out, merged=out_merged, unloaded=out_unloaded), d + "/outputs.pt")
    assert not any(m == "prx_nb" or m.startswith("prx_nb.") for m in sys.modules), "prx_nb was imported"
    print(json.dumps(dict(cls=type(model).__name__, base=type(unloaded).__name__, n_lora=n_lora)))
''')


def test_adapter_loads_with_plain_peft(tmp_path):
    torch.manual_seed(0)
    net = build_denoiser("shapes-tiny", context_in_dim=16)
    for b in net.blocks: torch.nn.init.normal_(b.modulation.lin.weight, std=0.1)  # adaLN-Zero starts every block as the identity
    net.save_pretrained(str(tmp_path / "base"))
    base = copy.deepcopy(net).eval()
    inp = dict(hidden_states=torch.rand(2, 3, 32, 32) * 2 - 1, timestep=torch.rand(2), encoder_hidden_states=torch.randn(2, 5, 16),
               attention_mask=torch.ones(2, 5, dtype=torch.bool))
    torch.save(inp, tmp_path / "inputs.pt")

    targets = lora_target_modules(net)
    cfg = add_lora(net, rank=4, alpha=8)
    assert type(net) is PRXTransformer2DModel
    trainable = [n for n, p in net.named_parameters() if p.requires_grad]
    assert len(trainable) == 2 * len(targets) and all("lora_" in n for n in trainable)
    with torch.no_grad(): assert torch.equal(net.eval()(**inp).sample, base(**inp).sample)  # B = 0: the base, exactly

    net.train(); opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    for _ in range(3):
        loss = ((net(**inp).sample - inp["hidden_states"]) ** 2).mean(); loss.backward(); opt.step(); opt.zero_grad()
    net.eval()
    with torch.no_grad(): ref, ref_base = net(**inp).sample, base(**inp).sample
    assert (ref - ref_base).abs().max() > 1e-3  # the adapter learned something
    frozen = {n.replace(".base_layer", ""): p for n, p in net.named_parameters() if "lora_" not in n}
    assert all(torch.equal(p, base.get_parameter(n)) for n, p in frozen.items())  # base weights untouched

    save_lora(net, tmp_path / "adapter", cfg, base_model_name_or_path=str(tmp_path / "base"))
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    assert json.loads((tmp_path / "adapter" / "adapter_config.json").read_text())["base_model_name_or_path"] == str(tmp_path / "base")
    merged = merge_lora(copy.deepcopy(net))
    assert type(merged) is PRXTransformer2DModel and not any("lora" in n or "base_layer" in n for n, _ in merged.named_modules())
    with torch.no_grad(): torch.testing.assert_close(merged(**inp).sample, ref, rtol=1e-5, atol=1e-5)
    merged.save_pretrained(str(tmp_path / "merged"))

    r = run([sys.executable, "-c", SCRIPT, str(tmp_path)])
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info == dict(cls="PeftModel", base="PRXTransformer2DModel", n_lora=2 * len(targets))
    out = torch.load(tmp_path / "outputs.pt")
    torch.testing.assert_close(out["adapter"], ref, rtol=1e-6, atol=1e-6)  # adapter on base == the trained model
    torch.testing.assert_close(out["merged"], out["adapter"], rtol=1e-5, atol=1e-5)  # merged == adapter on base
    torch.testing.assert_close(out["unloaded"], out["adapter"], rtol=1e-5, atol=1e-5)


def test_lora_off_and_groups():
    net = build_denoiser("shapes-tiny", context_in_dim=16)
    before = {n: p.requires_grad for n, p in net.named_parameters()}
    assert add_lora(net, rank=0) is None and {n: p.requires_grad for n, p in net.named_parameters()} == before
    attn, mlp = lora_target_modules(net, ("attention",)), lora_target_modules(net, "mlp")
    assert len(attn) == len(mlp) == 3 * len(net.blocks) and set(attn) | set(mlp) == set(lora_target_modules(net))
    assert all(n.startswith("blocks.") for n in attn + mlp)
    with pytest.raises(ValueError, match="choose from"): lora_target_modules(net, ("modulation",))


CHECK = textwrap.dedent('''
    import sys, torch
    from diffusers import PRXTransformer2DModel
    from peft import PeftModel
    base, adapter, trained = sys.argv[1:4]
    merged = PeftModel.from_pretrained(PRXTransformer2DModel.from_pretrained(base, subfolder="transformer"), adapter).merge_and_unload()
    saved = PRXTransformer2DModel.from_pretrained(trained, subfolder="transformer").state_dict()
    for k, v in merged.state_dict().items(): torch.testing.assert_close(saved[k], v, rtol=1e-5, atol=1e-6, msg=k)
    assert not any(m == "prx_nb" or m.startswith("prx_nb.") for m in sys.modules), "prx_nb was imported"
    print("adapter on base == trained pipeline")
''')


def test_train_lora_from_a_pipeline(tmp_path, tiny_run):
    "`prx-nb train lora.rank=4 model.init=...` trains the adapter only, saves it in peft's format and a merged pipeline."
    out, base = tmp_path / "lora", tiny_run / "pipeline"
    run([sys.executable, "-m", "prx_nb", "train", "--preset", "shapes-tiny", "--out", str(out),
         "--max-steps", "5", f"model.init={base}", "text.encoder=init", "lora.rank=4", "eval.every=0", "train.lr=0.01"])
    assert sorted(p.name for p in (out / "lora").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]
    b = PRXTransformer2DModel.from_pretrained(str(base), subfolder="transformer").state_dict()
    t = PRXTransformer2DModel.from_pretrained(str(out / "pipeline"), subfolder="transformer").state_dict()
    targets = set(lora_target_modules(build_denoiser("shapes-tiny")))
    frozen = [k for k in b if k.rsplit(".", 1)[0] not in targets]
    assert frozen and all(torch.equal(b[k], t[k]) for k in frozen), "a weight LoRA does not adapt changed"
    assert any(not torch.equal(b[k], t[k]) for k in b if k.rsplit(".", 1)[0] in targets), "the adapted weights did not move"
    r = run([sys.executable, "-c", CHECK, str(base), str(out / "lora"), str(out / "pipeline")])
    assert "adapter on base == trained pipeline" in r.stdout
