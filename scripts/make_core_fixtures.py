#!/usr/bin/python3
"""Writes tests/fixtures/core_parity.safetensors: reference targets and losses for the C++ core.

Run with Debian's /usr/bin/python3 (python3-torch 1.13):
    /usr/bin/python3 scripts/make_core_fixtures.py

Everything is computed the straightforward PyTorch way, independently of the C++ code:
  - targets: the last K layer results, each normalised (instance norm over time per channel on the
    real positions only, by slicing each example and calling F.instance_norm; or F.layer_norm
    over D; or none), averaged, then the average normalised the same way. Padded positions of an
    instance-normalised tensor are zero, as in the C++.
  - losses: predictions and targets at the masked, real positions; squared error (scale
    1/sqrt(D)) and smooth L1 written out by hand (beta 2, scale 1), summed over D, averaged over
    positions.
Inputs are fixed small seeded tensors; the mask and padding are given, not drawn by matched RNGs.
The safetensors file is written by hand (8-byte little-endian header length, JSON header, raw
little-endian bytes) so that the script needs nothing beyond torch.
"""

import json
import math
import os
import struct

import torch
import torch.nn.functional as F

SEED = 1234
L, B, T, D = 4, 2, 6, 8
EPS = 1e-5
OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "fixtures",
                   "core_parity.safetensors")


def instance_norm_real(x, padding_mask):
    """x [B,T,D]; instance norm over the real time steps of each example; padded steps -> 0."""
    out = torch.zeros_like(x)
    for b in range(x.shape[0]):
        real = (~padding_mask[b]).nonzero().flatten()
        xb = x[b, real].T.unsqueeze(0)  # [1,D,Tb]
        out[b, real] = F.instance_norm(xb, eps=EPS)[0].T
    return out


def normalise(x, kind, padding_mask):
    if kind == "none":
        return x
    if kind == "instance":
        return instance_norm_real(x, padding_mask)
    if kind == "layer":
        return F.layer_norm(x, (x.shape[-1],), eps=EPS)
    raise ValueError(kind)


def targets(layer_results, padding_mask, k, layer_norm, final_norm):
    top = [normalise(y, layer_norm, padding_mask) for y in layer_results[-k:]]
    return normalise(sum(top) / k, final_norm, padding_mask)


def smooth_l1_by_hand(p, t, beta):
    d = (p - t).abs()
    return torch.where(d < beta, 0.5 * d * d / beta, d - 0.5 * beta)


DTYPES = {torch.float32: "F32", torch.bool: "BOOL", torch.int64: "I64"}


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        t = t.detach().contiguous().cpu()
        raw = t.numpy().tobytes() if t.dtype != torch.bool else t.to(torch.uint8).numpy().tobytes()
        header[name] = {"dtype": DTYPES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    header_bytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    header_bytes += b" " * (-len(header_bytes) % 8)  # data starts 8-byte aligned
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(header_bytes)))
        f.write(header_bytes)
        for raw in blobs:
            f.write(raw)


def main():
    assert struct.pack("=I", 1) == struct.pack("<I", 1), "raw bytes must be little-endian"
    g = torch.Generator().manual_seed(SEED)
    layer_results = torch.randn(L, B, T, D, generator=g) * 2.0 + 0.5  # [L,B,T,D]
    predictions = torch.randn(B, T, D, generator=g) * 2.0              # [B,T,D]
    padding_mask = torch.zeros(B, T, dtype=torch.bool)
    padding_mask[1, 4:] = True                                        # example 1: 4 real steps
    # Masked steps; (1, 5) is padding and must not count.
    mask = torch.tensor([[1, 0, 1, 1, 0, 0], [0, 1, 0, 1, 0, 1]], dtype=torch.bool)

    # References in float64 from the float32 inputs, stored as float32.
    layers64 = [y.double() for y in layer_results]
    out = {
        "layer_results": layer_results,
        "padding_mask": padding_mask,
        "mask": mask,
        "predictions": predictions,
    }
    configs = [("targets_k3_instance_none", 3, "instance", "none"),
               ("targets_k2_layer_layer", 2, "layer", "layer"),
               ("targets_k4_none_instance", 4, "none", "instance")]
    for name, k, layer_norm, final_norm in configs:
        out[name] = targets(layers64, padding_mask, k, layer_norm, final_norm).float()

    selected = mask & ~padding_mask                                   # [B,T]
    p = predictions.double()[selected]                                # [N,D]
    t = out["targets_k3_instance_none"].double()[selected]            # [N,D]
    out["selected_count"] = torch.tensor(int(selected.sum()), dtype=torch.int64)
    out["loss_mse_scale_inv_sqrt_d"] = (
        ((p - t) ** 2).sum(-1).mean() / math.sqrt(D)).float()
    out["loss_smooth_l1_beta2_scale1"] = smooth_l1_by_hand(p, t, 2.0).sum(-1).mean().float()

    metadata = {
        "generated_by": "@generated by scripts/make_core_fixtures.py; do not edit by hand",
        "torch_version": torch.__version__,
        "seed": str(SEED),
        "eps": str(EPS),
        "configs": "k3 instance/none, k2 layer/layer, k4 none/instance; losses on k3 targets",
    }
    write_safetensors(OUT, out, metadata)
    print(f"wrote {os.path.normpath(OUT)} ({os.path.getsize(OUT)} bytes)")


if __name__ == "__main__":
    main()
