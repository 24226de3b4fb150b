"""Tiny, randomly initialised metric networks saved to local paths, so metric tests run offline.

`tiny_inception_weights(path)` writes torch-fidelity's InceptionV3 (the FID network, full size: its state dict must
match) with random weights, for `InceptionFeatures(weights=path)`. `tiny_clip(path)` saves a CLIP with one-layer
towers and a byte-level BPE tokenizer written here, for `CLIPFeatures(path)`. `tiny_dino(path)` saves a one-layer
DINOv2, for `VisionFeatures.load(path)`. Each builds once: an existing path is returned as it is. The numbers they
give are plumbing checks, not measurements.
"""
import json, tempfile
from pathlib import Path

import torch
from torch import nn


def _random_inception():
    "torch-fidelity's InceptionV3 with random weights: its constructor would download the real ones."
    from unittest import mock
    import torch_fidelity.feature_extractor_inceptionv3 as tf

    class Unloaded(tf.FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):
            return None  # keep the random initialisation

    with mock.patch.object(tf, "load_state_dict_from_url", lambda *a, **k: {}):
        return Unloaded("inception-v3-compat", ["2048"])


def tiny_inception_weights(path, seed: int = 0) -> Path:
    "A random-weight InceptionV3 state dict at `path` (fp16, ~48 MB) for `InceptionFeatures(weights=path)`."
    path = Path(path)
    if path.exists():
        return path
    torch.manual_seed(seed)
    net = _random_inception()
    for m in net.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, nonlinearity="relu")  # keeps activations at scale through 90 layers
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v.half() if v.is_floating_point() else v for k, v in net.state_dict().items()}, path)
    return path


def _bytes_to_unicode() -> dict:
    "GPT-2/CLIP's reversible map from bytes to printable unicode characters."
    bs = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    cs, n = bs[:], 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def _tiny_clip_tokenizer(folder: Path):
    "A CLIP tokenizer with no merges: every byte, alone or ending a word, is a token (514 in all)."
    from transformers import CLIPTokenizer

    chars = list(_bytes_to_unicode().values())
    vocab = chars + [c + "</w>" for c in chars] + ["<|startoftext|>", "<|endoftext|>"]
    (folder / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(vocab)}))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=77)


def tiny_clip(path, seed: int = 0, size: int = 32) -> Path:
    "A CLIPModel (one-layer towers, width 32) and CLIPProcessor saved at `path` for `CLIPFeatures(path)`."
    from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPProcessor

    path = Path(path)
    if (path / "config.json").exists():
        return path
    with tempfile.TemporaryDirectory() as d:
        tok = _tiny_clip_tokenizer(Path(d))
    tower = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2)
    text = dict(tower, vocab_size=len(tok), max_position_embeddings=77,
                bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(seed)
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=dict(tower, image_size=size, patch_size=8),
                                 projection_dim=16))
    image_processor = CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size})
    model.save_pretrained(path)
    CLIPProcessor(image_processor=image_processor, tokenizer=tok).save_pretrained(path)
    return path


def tiny_dino(path, seed: int = 0, size: int = 32) -> Path:
    "A one-layer DINOv2 (width 32, patch 8) and its image processor saved at `path` for `VisionFeatures.load(path)`."
    from transformers import BitImageProcessor, Dinov2Config, Dinov2Model

    path = Path(path)
    if (path / "config.json").exists():
        return path
    torch.manual_seed(seed)
    cfg = Dinov2Config(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64, patch_size=8,
                       image_size=size)
    Dinov2Model(cfg).save_pretrained(path)
    BitImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size},
                      image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(path)
    return path
