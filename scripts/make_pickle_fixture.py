#!/usr/bin/python3
"""Writes tests/fixtures/hf_pickle/: many_entries.bin (1001 views of one storage, so the last
entry is pickled with SETITEM) and a pytorch_model.bin saved the way `torch.save(model.state_dict())`
saves one (an OrderedDict carrying a `_metadata` attribute; tensors that are views into a shared
storage, one with an offset, one transposed), and expected.safetensors with the same tensors,
contiguous. LibTorch 1.13's unpickler reads an OrderedDict as None: the C++ reader must cope.

Generated file: run `/usr/bin/python3 scripts/make_pickle_fixture.py` to regenerate; do not edit.
"""
import collections
import json
import os
import struct

import torch

OUT = os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "hf_pickle")


def write_safetensors(path, tensors):
    header, blobs, offset = {"__metadata__": {"format": "pt"}}, [], 0
    for name in sorted(tensors):
        t = tensors[name].contiguous()
        data = t.numpy().tobytes()
        header[name] = {"dtype": {torch.float32: "F32", torch.int64: "I64"}[t.dtype],
                        "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        blobs.append(data)
        offset += len(data)
    text = json.dumps(header, separators=(",", ":"))
    text += " " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text.encode() + b"".join(blobs))


def main():
    os.makedirs(OUT, exist_ok=True)
    g = torch.Generator().manual_seed(7)
    base = torch.randn(4, 6, generator=g)
    state = collections.OrderedDict()
    state["encoder.weight"] = torch.randn(3, 5, generator=g)
    state["encoder.offset_view"] = base[1:]            # storage offset 6
    state["encoder.transposed"] = base.t()             # non-contiguous strides
    state["embeddings.position_ids"] = torch.arange(8).unsqueeze(0)
    state._metadata = collections.OrderedDict([("", {"version": 1}), ("encoder", {"version": 1})])
    torch.save(state, os.path.join(OUT, "pytorch_model.bin"))
    write_safetensors(os.path.join(OUT, "expected.safetensors"), dict(state))
    # 1001 entries: pickle writes batches of 1000 with SETITEMS and the last one with SETITEM.
    shared = torch.arange(1001, dtype=torch.float32)
    many = collections.OrderedDict((f"w.{i:04d}", shared[i:i + 1]) for i in range(1001))
    many._metadata = collections.OrderedDict([("", {"version": 1})])
    torch.save(many, os.path.join(OUT, "many_entries.bin"))


if __name__ == "__main__":
    main()
