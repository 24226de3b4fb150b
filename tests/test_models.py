"""The real model classes PRX uses, through the code a hub id goes through, offline: tiny random-weight T5-Gemma, Qwen3,
DINOv3 and DINOv2-with-registers saved with save_pretrained and loaded by path.

`tiny_t5gemma`, `tiny_qwen3`, `tiny_dinov3` and `tiny_dinov2_registers` build such folders for other tests (a training
run can take their paths as text.encoder or tricks.teacher)."""
import copy, json

import pytest
import torch

from prx_nb.architecture import TextTower, build_denoiser, build_pipeline, require_cached, vocabulary, word_tokenizer
from prx_nb.data import BACKGROUNDS, COLORS, NUMBERS, POSITIONS, RELATIONS, SHAPES
from prx_nb.speedrun import _card_license, component_license
from prx_nb.teachers import VisionTeacher

IMAGENET = dict(mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
WORDS = vocabulary([*COLORS, *SHAPES, *POSITIONS, *NUMBERS, *RELATIONS, *BACKGROUNDS, "a an the on in of background",
                    "small large big little tiny circles squares triangles"])  # Shapes captions' words; others: [UNK]


def _text_part(vocab_size: int, dim: int) -> dict:
    "A 2-layer Gemma/Qwen-style decoder stack's settings."
    return dict(vocab_size=vocab_size, hidden_size=dim, intermediate_size=2 * dim, num_hidden_layers=2,
                num_attention_heads=2, num_key_value_heads=1, head_dim=dim // 2)


def tiny_t5gemma(path, dim: int = 32, words=WORDS, seed: int = 0) -> str:
    "A T5-Gemma encoder-decoder (random weights, 2 layers each side) and a word-level tokenizer, saved in `path`."
    from transformers import T5GemmaConfig, T5GemmaForConditionalGeneration

    tok = word_tokenizer(words)
    torch.manual_seed(seed)
    part = _text_part(len(tok), dim)
    model = T5GemmaForConditionalGeneration(T5GemmaConfig(encoder=part, decoder=part, vocab_size=len(tok)))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def tiny_qwen3(path, dim: int = 32, words=WORDS, seed: int = 0) -> str:
    "A Qwen3 causal LM (random weights, 2 layers) and a word-level tokenizer, saved in `path`."
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = word_tokenizer(words)
    torch.manual_seed(seed)
    Qwen3ForCausalLM(Qwen3Config(**_text_part(len(tok), dim))).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def _vision(model_cls, config_cls, processor_cls, path, dim, patch, image_size, seed, mean, std) -> str:
    "A 2-block ViT with 4 registers (random weights) and its image processor, saved in `path`."
    torch.manual_seed(seed)
    cfg = config_cls(hidden_size=dim, num_hidden_layers=2, num_attention_heads=2, intermediate_size=2 * dim,
                     patch_size=patch, image_size=image_size, num_register_tokens=4)
    model_cls(cfg).save_pretrained(path)
    processor_cls(image_mean=list(mean), image_std=list(std)).save_pretrained(path)
    return str(path)


def tiny_dinov3(path, dim=32, patch=8, image_size=32, seed=0, mean=IMAGENET["mean"], std=IMAGENET["std"]) -> str:
    "A DINOv3 ViT (2 blocks, CLS + 4 registers, random weights) and its image processor, saved in `path`."
    from transformers import DINOv3ViTConfig, DINOv3ViTImageProcessor, DINOv3ViTModel

    classes = DINOv3ViTModel, DINOv3ViTConfig, DINOv3ViTImageProcessor
    return _vision(*classes, path, dim, patch, image_size, seed, mean, std)


def tiny_dinov2_registers(path, dim=32, patch=8, image_size=32, seed=0, mean=IMAGENET["mean"], std=IMAGENET["std"]):
    "A DINOv2 with registers (2 blocks, CLS + 4 registers, random weights) and its image processor, saved in `path`."
    from transformers import BitImageProcessor, Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    classes = Dinov2WithRegistersModel, Dinov2WithRegistersConfig, BitImageProcessor
    return _vision(*classes, path, dim, patch, image_size, seed, mean, std)


TEXT = {"t5gemma": (tiny_t5gemma, "T5GemmaEncoderModel"), "qwen3": (tiny_qwen3, "Qwen3Model")}
VISION = {"dinov3": tiny_dinov3, "dinov2_registers": tiny_dinov2_registers}
PROMPTS = ["a red circle", "a large blue square on a white background", ""]
REAL = [5, 10, 2]  # [CLS] words [SEP]


@pytest.fixture(scope="module", params=sorted(TEXT))
def text_model(request, tmp_path_factory):
    "(kind, folder) of a tiny saved text model."
    return request.param, TEXT[request.param][0](tmp_path_factory.mktemp(request.param))


def _saved_encoder(kind: str, path: str) -> dict:
    "The encoder's weights as saved, keyed as the encoder-only model names them."
    from transformers import AutoModelForCausalLM, T5GemmaForConditionalGeneration

    if kind == "t5gemma":
        encoder = T5GemmaForConditionalGeneration.from_pretrained(path).model.encoder
        return {f"encoder.{k}": v for k, v in encoder.state_dict().items()}
    return AutoModelForCausalLM.from_pretrained(path).model.state_dict()


def test_text_tower_loads_real_classes(text_model):
    kind, path = text_model
    tower = TextTower.load(path, max_tokens=16)
    assert type(tower.encoder).__name__ == TEXT[kind][1]
    assert tower.dim == 32
    saved = _saved_encoder(kind, path)
    assert all(torch.equal(saved[k], v) for k, v in tower.encoder.state_dict().items())  # the checkpoint's, not random
    e, m = tower.encode(PROMPTS)
    assert e.shape == (3, 16, 32) and e.dtype == torch.float32
    assert m.sum(1).tolist() == REAL
    assert all(m[i, :n].all() and not m[i, n:].any() for i, n in enumerate(REAL))  # right-padded
    e12, _ = TextTower.load(path, max_tokens=12).encode(PROMPTS)
    for i, n in enumerate(REAL):  # more padding leaves the real tokens' states alone
        torch.testing.assert_close(e12[i, :n], e[i, :n], atol=1e-5, rtol=1e-5)


def test_text_tower_bf16(text_model):
    kind, path = text_model
    e, _ = TextTower.load(path, max_tokens=16).encode(PROMPTS)
    tower = TextTower.load(path, max_tokens=16, dtype=torch.bfloat16)
    assert tower.encoder.dtype == torch.bfloat16
    raw = tower.pipe.encode_prompt(PROMPTS, "cpu", False)[0]
    assert raw.dtype == torch.bfloat16
    eb, _ = tower.encode(PROMPTS)
    assert eb.dtype == torch.float32 and torch.equal(eb, raw.float())
    torch.testing.assert_close(eb, e, atol=0.1, rtol=0.05)
    ea, _ = TextTower.load(path, max_tokens=16).encode(PROMPTS, bf16=True)  # autocast, as training prepares data
    torch.testing.assert_close(ea, e, atol=0.1, rtol=0.05)


def test_saved_pipeline_encodes_the_same(text_model, tmp_path):
    from diffusers import DiffusionPipeline

    kind, path = text_model
    tower = TextTower.load(path, max_tokens=16)
    build_pipeline(build_denoiser("shapes-tiny", context_in_dim=tower.dim), tower, 32).save_pretrained(tmp_path)
    index = json.loads((tmp_path / "model_index.json").read_text())
    assert index["text_encoder"] == ["transformers", TEXT[kind][1]]
    e, m = tower.encode(PROMPTS)
    pipe = DiffusionPipeline.from_pretrained(str(tmp_path))  # plain diffusers: reads last_hidden_state
    e2, m2, _, _ = pipe.encode_prompt(PROMPTS, "cpu", False)
    torch.testing.assert_close(e2, e, atol=1e-6, rtol=1e-6)
    assert torch.equal(m2, m)
    e3, _ = TextTower.load(str(tmp_path), max_tokens=16, pipeline=True).encode(PROMPTS)
    torch.testing.assert_close(e3, e, atol=1e-6, rtol=1e-6)


def test_missing_encoder_weights_refused(tmp_path):
    from transformers import Qwen3Config, Qwen3ForCausalLM

    tok = word_tokenizer(["red"])
    model = Qwen3ForCausalLM(Qwen3Config(**_text_part(len(tok), 32)))
    kept = {k: v for k, v in model.state_dict().items() if k != "model.norm.weight"}
    model.save_pretrained(tmp_path, state_dict=kept)
    tok.save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="norm.weight"):
        TextTower.load(str(tmp_path))


@pytest.mark.parametrize("kind", sorted(VISION))
def test_vision_teacher(kind, tmp_path):
    path = VISION[kind](tmp_path, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3))
    from transformers import AutoModel

    full = AutoModel.from_pretrained(path).eval()
    t = VisionTeacher.load(path)
    assert t.mean.flatten().tolist() == pytest.approx([0.5, 0.4, 0.3])  # from preprocessor_config.json
    assert t.std.flatten().tolist() == pytest.approx([0.25, 0.2, 0.3])
    for size in (32, 48):  # the config's image size, and another
        x = torch.rand(2, 3, size, size) * 2 - 1
        ts = VisionTeacher.load(path, image_size=size)
        with torch.no_grad():
            h = full(pixel_values=((x + 1) / 2 - ts.mean) / ts.std).last_hidden_state
        grid = size // 8
        assert h.shape == (2, 1 + 4 + grid * grid, 32)  # CLS, 4 registers, the patches
        torch.testing.assert_close(ts(x), h[:, 5:].reshape(2, grid, grid, 32), atol=1e-5, rtol=1e-5)
        assert ts(torch.rand(1, 3, 40, 40) * 2 - 1).shape == (1, grid, grid, 32)  # any input size is resized
    cut_cfg = copy.deepcopy(full.config)
    cut_cfg.num_hidden_layers = 1
    cut = AutoModel.from_config(cut_cfg).eval()
    cut.load_state_dict(full.state_dict(), strict=False)  # the first block's weights, and the embeddings and norm
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    first = VisionTeacher.load(path, layer=1)
    torch.testing.assert_close(first(x), VisionTeacher(cut, 32, (0.5, 0.4, 0.3), (0.25, 0.2, 0.3))(x))
    torch.testing.assert_close(VisionTeacher.load(path, layer=2)(x), t(x))
    with pytest.raises(ValueError, match="blocks 1 to 2"):
        VisionTeacher.load(path, layer=3)


def test_offline_hub_ids_fail_with_the_fix(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(OSError) as e:
        TextTower.load("google/t5gemma-2b-2b-ul2")
    hub_id = "google/t5gemma-2b-2b-ul2"
    for words in (f"the text encoder '{hub_id}'", f"hf download {hub_id}", "save_pretrained", "tokenizer"):
        assert words in str(e.value)
    with pytest.raises(OSError) as e:
        VisionTeacher.load("facebook/dinov3-vitl16-pretrain-lvd1689m")
    hub_id = "facebook/dinov3-vitl16-pretrain-lvd1689m"
    for words in (f"the vision teacher '{hub_id}'", f"hf download {hub_id}", "preprocessor_config"):
        assert words in str(e.value)
    with pytest.raises(OSError, match="text_encoder"):
        require_cached("Photoroom/prxpixel-t2i", "the text encoder", "text_encoder", "text_encoder")


def test_cached_hub_id_passes(monkeypatch, tmp_path):
    import huggingface_hub

    snap = tmp_path / "models--someone--tiny" / "snapshots" / "abc"
    snap.mkdir(parents=True)
    (snap / "config.json").write_text("{}")
    (tmp_path / "models--someone--tiny" / "refs").mkdir()
    (tmp_path / "models--someone--tiny" / "refs" / "main").write_text("abc")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    require_cached("someone/tiny", "the test", "files")  # cached: no error
    with pytest.raises(OSError, match="someone/other"):
        require_cached("someone/other", "the test", "files")


def test_component_licenses(tmp_path):
    builders = dict(t5gemma=tiny_t5gemma, qwen3=tiny_qwen3, dinov3=tiny_dinov3, dinov2=tiny_dinov2_registers)
    paths = {kind: build(tmp_path / kind) for kind, build in builders.items()}
    got = {kind: component_license(p)[0] for kind, p in paths.items()}  # by the saved config's model_type
    assert got == dict(t5gemma="Gemma Terms of Use", qwen3="Apache-2.0", dinov3="DINOv3 License", dinov2="Apache-2.0")
    assert component_license("minilm")[0] == "Apache-2.0"
    assert component_license(paths["qwen3"])[2] == "apache-2.0"
    cfg = dict(text=dict(encoder=paths["t5gemma"]), tricks=dict(repa=0.5, teacher=paths["dinov3"]))
    tag, lines = _card_license(cfg)
    assert tag == "gemma"
    assert any("DINOv3 License" in line and "REPA teacher" in line for line in lines)
    cfg = dict(text=dict(encoder=paths["qwen3"]), tricks=dict(dino=0.01, teacher=paths["dinov2"]))
    tag, _ = _card_license(cfg)
    assert tag == "apache-2.0"


def test_model_card_names_every_license(tmp_path):
    from prx_nb.config import load_config
    from prx_nb.speedrun import model_card

    (tmp_path / "pipeline").mkdir()
    (tmp_path / "pipeline" / "model_index.json").write_text(json.dumps({"_class_name": "PRXPixelPipeline"}))
    start = dict(event="start", config=load_config("prx-24h-512").to_dict())
    (tmp_path / "metrics.jsonl").write_text(json.dumps(start) + "\n")
    card = model_card(tmp_path / "pipeline", "someone/prx")
    assert "license: gemma" in card  # the bundled T5-Gemma's terms, not apache-2.0
    for terms in ("ai.google.dev/gemma/terms", "dinov3-license", "[Apache-2.0]"):
        assert terms in card


def test_train_runs_with_each_real_class(tmp_path):
    "A run with T5-Gemma's encoder as its text tower, DINOv3 as REPA's teacher and DINOv2-with-registers as the DINO "
    "loss's; a second with Qwen3 encoding the text in the step (no text cache)."
    import subprocess, sys
    from pathlib import Path
    prx = str(Path(sys.executable).parent / "prx-nb")
    paths = dict(t5=tiny_t5gemma(tmp_path / "t5"), qwen=tiny_qwen3(tmp_path / "qwen"), dinov3=tiny_dinov3(tmp_path / "dinov3"),
                 dinov2=tiny_dinov2_registers(tmp_path / "dinov2"))
    common = ["--preset", "shapes-tiny", "--max-steps", "2", "eval.every=0", "train.mixed_precision=no", "data.n=32",
              "train.batch_size=8", "train.log_every=1"]
    runs = {"t5": [f"text.encoder={paths['t5']}", "tricks.repa=0.5", f"tricks.teacher={paths['dinov3']}", "tricks.dino=0.1",
                   f"tricks.dino_teacher={paths['dinov2']}"],
            "qwen": [f"text.encoder={paths['qwen']}", "data.text_cache=false"]}
    for name, extra in runs.items():
        out = tmp_path / f"run-{name}"
        r = subprocess.run([prx, "train", "--out", str(out), *common, *extra], capture_output=True, text=True, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        logs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        steps = [e for e in logs if "loss" in e and "event" not in e]
        assert len(steps) == 2 and all(torch.isfinite(torch.tensor(e["loss"])) for e in steps)
        info = json.loads((out / "data" / "prepared" / "prepared.json").read_text())
        encoder = json.loads((out / "pipeline" / "text_encoder" / "config.json").read_text())
        if name == "t5":
            assert {"loss_repa", "loss_dino"} <= set(steps[-1]) and info["text_cache"] and info["text_dim"] == 32
            assert encoder["architectures"] == ["T5GemmaEncoderModel"]  # the encoder alone, as plain diffusers loads it
        else:
            assert not info["text_cache"] and encoder["model_type"] == "qwen3"
