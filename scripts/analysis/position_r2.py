#!/usr/bin/env python3
"""How much of an audio encoder's output is a function of frame position alone?

Runs the plain-PyTorch twin of the audio encoder (bench/reference.py: same architecture and
parameter names, its loss checked equal to the C++ one by the bench_smoke test) on 64 spoken-digit
clips cut to the same length, and reports, per checkpoint and for the same encoder at random
init:

  R2 position   1 - (variance left after subtracting each frame position's mean over the clips)
                / (variance), per channel, summed over channels. 1.0 = the tensor is the same for
                every clip at a given position: it carries no information about the audio.
  R2 neighbours how well the mean of the frames 5 either side predicts a frame (smoothness).

for the data2vec targets (instance-normed FFN outputs of every block, averaged), the final
output x, and the local (CNN) features. Usage, from the repository root:

  /usr/bin/python3 scripts/analysis/position_r2.py runs/speech/checkpoints/last [more ...]
"""
import glob
import json
import os
import random
import re
import sys
import wave

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import reference as R  # noqa: E402

R.AUDIO.setdefault("mini", (4, 128, 512, 2, 128))


def load_safetensors(path):
    raw = open(path, "rb").read()
    n = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8:8 + n])
    dtypes = {"F32": np.float32, "F64": np.float64, "I64": np.int64}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        array = np.frombuffer(raw[8 + n + begin:8 + n + end], dtype=dtypes[info["dtype"]])
        out[name] = torch.from_numpy(array.reshape(info["shape"]).copy())
    return out


def config_value(checkpoint, key, default):
    text = open(os.path.join(checkpoint, "config.yaml")).read()
    found = re.search(r"^\s+" + key + r":\s*(\S+)", text, re.M)
    return found.group(1) if found else default


def make_encoder(preset, kernel):
    encoder = R.AudioEncoder(preset, dropout=0.0)
    if kernel:
        d = encoder.encoder.layer_norm.normalized_shape[0]
        encoder.encoder.pos_conv_embed.layers = torch.nn.ModuleList(
            R.PositionalConvLayer(d, k=kernel) for _ in range(5))
    return encoder.eval()


def clips(n, samples, root="data/speech/spoken-digits/train"):
    files = sorted(glob.glob(root + "/*/*.wav"))
    random.Random(0).shuffle(files)
    out = []
    for f in files:
        w = wave.open(f)
        x = np.frombuffer(w.readframes(w.getnframes()), dtype=np.int16).astype(np.float32)
        if len(x) >= samples:
            x = x[:samples]
            out.append((x - x.mean()) / (x.std() + 1e-5))
        if len(out) == n:
            break
    return torch.tensor(np.stack(out))


def total_var(y):
    return y.reshape(-1, y.size(-1)).var(0).sum().item()


def r2_position(y):
    return 1 - total_var(y - y.mean(0, keepdim=True)) / total_var(y)


def r2_neighbours(y):
    padded = F.pad(y.transpose(1, 2), (5, 5), mode="replicate")
    guess = ((padded[:, :, :y.size(1)] + padded[:, :, 10:10 + y.size(1)]) / 2).transpose(1, 2)
    return 1 - total_var(y - guess) / total_var(y)


def report(name, encoder, waves):
    with torch.no_grad():
        x, results, _, local = encoder.extract_features(waves, None, None)
        targets = sum(R.instance_norm_targets(r, 1e-5) for r in results) / len(results)
    print(f"{name:55s} targets: R2 position {r2_position(targets):.3f}, "
          f"R2 neighbours {r2_neighbours(targets):.3f} | x: R2 position {r2_position(x):.3f} | "
          f"local: R2 position {r2_position(local):.3f}")


def main():
    torch.manual_seed(0)
    waves = clips(64, 8000)  # 0.5 s: 24 frames
    for checkpoint in sys.argv[1:]:
        preset = config_value(checkpoint, "preset", "mini")
        kernel = int(config_value(checkpoint, "pos_conv_kernel", "0"))
        report(f"random init ({preset}, pos conv kernel {kernel or 19})",
               make_encoder(preset, kernel), waves)
        state = load_safetensors(os.path.join(checkpoint, "model.safetensors"))
        for prefix in ("student.", "teacher."):
            encoder = make_encoder(preset, kernel)
            weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            result = encoder.load_state_dict(weights, strict=False)
            assert not result.missing_keys and not result.unexpected_keys, result
            report(f"{checkpoint} {prefix[:-1]}", encoder, waves)


if __name__ == "__main__":
    main()
