"""A text tower made of the first layers of prx-nb's offline MiniLM, saved as a folder `text.encoder=` can load.

    python bench/truncated_text_encoder.py runs/minilm-l3 --layers 3
    prx-nb speedrun --preset shapes-cpu-10min --out runs/minilm3 text.encoder=runs/minilm-l3 eval.seed=999

all-MiniLM-L6-v2 is trained so that its mean-pooled last layer encodes a sentence; its tokens' last states are more alike
than those of its middle layers (the script prints the mean cosine similarity of a caption's token states per layer), and
a denoiser that must tell which shape word goes with which color word may read a middle layer better.
"""
import argparse

import torch
from transformers import AutoModel, AutoTokenizer

from prx_nb.architecture import minilm_path

CAPTION = "a yellow triangle above a cyan circle on a gray background"


def token_similarity(states: torch.Tensor) -> float:
    "Mean cosine similarity between the distinct token states of one caption (its [CLS] and [SEP] left out)."
    unit = torch.nn.functional.normalize(states[1:-1], dim=-1)
    n = len(unit)
    return float(((unit @ unit.T).sum() - n) / (n * n - n))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("out", help="folder to save the truncated encoder and its tokenizer in")
    p.add_argument("--layers", type=int, default=3, help="how many of MiniLM's 6 layers to keep")
    a = p.parse_args()
    tokenizer, model = AutoTokenizer.from_pretrained(minilm_path()), AutoModel.from_pretrained(minilm_path())
    if not 1 <= a.layers <= model.config.num_hidden_layers:
        raise SystemExit(f"--layers {a.layers}: keep between 1 and {model.config.num_hidden_layers} layers")
    with torch.no_grad():
        states = model(**tokenizer(CAPTION, return_tensors="pt"), output_hidden_states=True).hidden_states
    for layer, s in enumerate(states):
        print(f"layer {layer}: mean token-to-token cosine {token_similarity(s[0]):.3f}")
    model.encoder.layer = model.encoder.layer[: a.layers]
    model.config.num_hidden_layers = a.layers
    model.save_pretrained(a.out)
    tokenizer.save_pretrained(a.out)
    print(f"saved MiniLM's first {a.layers} layers to {a.out}")


if __name__ == "__main__":
    main()
