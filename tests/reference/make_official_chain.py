"""Build a 16 -> 32 -> 64 StyleGAN-XL chain with the OFFICIAL code and save reference tensors for the port.

Not part of radgan_jax and never run by the test suite: it needs PyTorch, `dill` and a checkout of
autonomousvision/stylegan-xl (commit 4241ff9, the one ../shared/golden comes from). It writes the committed
files in tests/data/official_chain64/ (pure data: .npz/.npy/.json) which `tests/jobs/test_official_chain.py`
reproduces; with --pickle it also writes a real official network snapshot (it embeds the official source code
through `torch_utils/persistence.py`, so it is not committed) for the opt-in pickle test.

    pip install dill
    python tests/reference/make_official_chain.py --official /path/to/stylegan-xl \
        --out tests/data/official_chain64 [--pickle /tmp/official_chain64.pkl]

The chain deliberately differs from the golden one in every size the issue names: c_dim 3, z_dim 32,
w_dim 128, syn_layers 6, channel_base 256 / channel_max 32, head_layers 4 (32 px) then 5 (64 px). Parameters
are perturbed the way ../shared/golden/README.md describes (so no code path is degenerate).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import sys
import tempfile

import numpy as np

N_SAMPLES = 3
CLASSES = [2, 0, 1]
STEM_KWARGS = dict(z_dim=32, c_dim=3, w_dim=128, img_resolution=16, img_channels=3,
                   mapping_kwargs=dict(rand_embedding=False, num_layers=2), channel_base=256, channel_max=32,
                   magnitude_ema_beta=0.5 ** (32 / 20000), conv_kernel=3, use_radial_filters=False, num_layers=6)
HEADS = [(32, 4, 10, 11), (64, 5, 20, 21)]  # (resolution, head_layers, build seed, perturbation seed)


def _perturb(module, torch, seed: int, prefix_filter=None) -> list[dict]:
    """+0.2*randn on every parameter (fc biases of the mapping x20 since their gain is 0.01); magnitude_ema
    U(0.5, 1.5). The ImageNet embedding stays as loaded. Returns the log."""
    gen = torch.Generator().manual_seed(seed)
    log = []
    with torch.no_grad():
        for name, p in module.named_parameters():
            if prefix_filter and not prefix_filter(name):
                continue
            if name == "mapping.embed.weight":
                continue
            scale = 20.0 if name in ("mapping.fc0.bias", "mapping.fc1.bias") else 0.2
            p.add_(scale * torch.randn(p.shape, generator=gen))
            log.append({"name": name, "op": f"+{scale}*randn"})
        for name, b in module.named_buffers():
            if name.endswith("magnitude_ema") and (not prefix_filter or prefix_filter(name)):
                b.copy_(0.5 + torch.rand(b.shape, generator=gen))
                log.append({"name": name, "op": "U(0.5,1.5)"})
    return log


def _class_centres(G, torch, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for k in range(G.c_dim):
            z = torch.randn([256, G.z_dim], generator=gen)
            c = torch.nn.functional.one_hot(torch.full([256], k), G.c_dim).float()
            G.mapping.w_avg[k].copy_(G.mapping(z, c)[:, 0].mean(0))


def _layer_dict(name: str, layer) -> dict:
    d = {"name": name, "is_torgb": bool(layer.is_torgb), "is_critically_sampled": bool(layer.is_critically_sampled),
         "use_fp16_on_cuda": bool(layer.use_fp16)}
    for k in ("in_channels", "out_channels", "conv_kernel", "filter_size", "lrelu_upsampling", "up_factor",
              "down_factor", "up_taps", "down_taps"):
        d[k] = int(getattr(layer, k))
    for k in ("in_sampling_rate", "out_sampling_rate", "tmp_sampling_rate", "in_cutoff", "out_cutoff",
              "in_half_width", "out_half_width", "magnitude_ema_beta"):
        d[k] = float(getattr(layer, k))
    d["in_size"] = [int(v) for v in layer.in_size]
    d["out_size"] = [int(v) for v in layer.out_size]
    d["padding"] = [int(v) for v in layer.padding]
    d["down_radial"] = bool(layer.down_radial)
    d["conv_clamp"] = None if layer.conv_clamp is None else float(layer.conv_clamp)
    return d


def _save_snapshot(G, path: str) -> None:
    with open(path, "wb") as f:
        pickle.dump({"G": G, "G_ema": G, "D": None, "augment_pipe": None, "training_set_kwargs": None}, f)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--official", required=True, help="checkout of autonomousvision/stylegan-xl")
    ap.add_argument("--out", required=True)
    ap.add_argument("--pickle", default=None, help="also write a real official snapshot pickle here")
    args = ap.parse_args()
    out = os.path.abspath(args.out)
    pickle_out = os.path.abspath(args.pickle) if args.pickle else None
    os.makedirs(out, exist_ok=True)
    sys.path.insert(0, os.path.abspath(args.official))
    os.chdir(args.official)  # the mapping network opens in_embeddings/ relative to the cwd

    import torch
    from training.networks_stylegan3_resetting import Generator, SuperresGenerator

    torch.set_num_threads(1)
    tmp = tempfile.mkdtemp()
    torch.manual_seed(0)
    G = Generator(**STEM_KWARGS).eval()
    perturbation = {"16": _perturb(G, torch, seed=1)}
    _class_centres(G, torch, seed=2)
    stem_path = os.path.join(tmp, "stage16.pkl")
    _save_snapshot(G, stem_path)
    stages = [{"resolution": 16, "kwargs": STEM_KWARGS}]
    for res, head_layers, build_seed, perturb_seed in HEADS:
        torch.manual_seed(build_seed)
        G = SuperresGenerator(img_resolution=res, path_stem=stem_path, head_layers=head_layers, up_factor=2).eval()
        with torch.no_grad():
            G.reinit_stem()  # as training_loop.py does
        heads = tuple(f"synthesis.{n}." for n in G.head_layer_names)
        perturbation[str(res)] = _perturb(G, torch, seed=perturb_seed, prefix_filter=lambda n, h=heads: n.startswith(h))
        stem_path = os.path.join(tmp, f"stage{res}.pkl")
        _save_snapshot(G, stem_path)
        stages.append({"resolution": res, "head_layers": head_layers, "up_factor": 2,
                       "head_layer_names": list(G.head_layer_names)})

    gen = torch.Generator().manual_seed(3)
    z = torch.randn([N_SAMPLES, G.z_dim], generator=gen)
    c = torch.nn.functional.one_hot(torch.tensor(CLASSES), G.c_dim).float()
    results = {}
    with torch.no_grad():
        for psi in (1.0, 0.7):
            results[f"ws_psi{psi}"] = G.mapping(z, c, truncation_psi=psi).numpy()
            results[f"img_psi{psi}"] = G(z, c, truncation_psi=psi, noise_mode="const").numpy()
    syn = G.synthesis
    layers = [_layer_dict(n, getattr(syn, n)) for n in syn.layer_names]
    config = {
        "description": "16->32->64 StyleGAN-XL chain built with the official code by "
                       "tests/reference/make_official_chain.py (perturbed as in ../shared/golden)",
        "repo": "autonomousvision/stylegan-xl", "torch_version": torch.__version__,
        "stages": stages,
        "SR_kwargs_passed": {"class_name": "training.networks_stylegan3_resetting.SuperresGenerator",
                             "head_layers": HEADS[-1][1], "up_factor": 2},
        "common_kwargs": {"c_dim": G.c_dim, "img_resolution": G.img_resolution, "img_channels": G.img_channels},
        "effective": {"z_dim": G.z_dim, "w_dim": G.w_dim, "c_dim": G.c_dim, "img_resolution": G.img_resolution,
                      "img_channels": G.img_channels, "num_ws": G.num_ws, "head_layers": HEADS[-1][1],
                      "channel_base": syn.channel_base, "channel_max": syn.channel_max,
                      "margin_size": syn.margin_size, "num_critical": syn.num_critical,
                      "last_stopband_rel": syn.last_stopband_rel, "output_scale": syn.output_scale,
                      "conv_kernel": syn.conv_kernel, "use_radial_filters": syn.use_radial_filters,
                      "input_channels": int(syn.input.channels), "input_size": [int(v) for v in syn.input.size],
                      "input_sampling_rate": float(syn.input.sampling_rate),
                      "input_bandwidth": float(syn.input.bandwidth), "layer_names": list(syn.layer_names)},
        "layers": layers,
        "inputs": {"N": N_SAMPLES, "classes": CLASSES, "z": "torch.randn([3,32], generator=manual_seed(3))"},
        "calls": {"ws": "G.mapping(z, c, truncation_psi=psi)",
                  "img": "G(z, c, truncation_psi=psi, noise_mode='const')"},
        "perturbation": perturbation,
    }
    np.savez(os.path.join(out, "params.npz"), **{k: v.detach().numpy() for k, v in G.state_dict().items()})
    np.save(os.path.join(out, "z.npy"), z.numpy())
    np.save(os.path.join(out, "c.npy"), c.numpy())
    for k, v in results.items():
        np.save(os.path.join(out, f"{k}.npy"), v.astype(np.float32))
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    if pickle_out:
        _save_snapshot(G, pickle_out)
    print(f"wrote {out} ({len(G.state_dict())} tensors, layers {syn.layer_names})"
          + (f" and {pickle_out}" if pickle_out else ""))


if __name__ == "__main__":
    main()
