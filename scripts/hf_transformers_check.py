#!/usr/bin/env python3
"""Check Hugging Face folders with the real `transformers` package (where one is installed).

Debian has no python3-transformers, so the test suite checks exports against
scripts/hf_reference.py, a transcription of Hugging Face's modeling code. This script closes the loop
on a machine that has the package itself (the GPU smoke machine has PyTorch and transformers):
`from_pretrained` must load a folder with no missing or unexpected weights, and its forward pass must
give the expected tensors. Files are read and written with hf_reference.py's safetensors code.

    python3 scripts/hf_transformers_check.py compare DIR --inputs IN.safetensors --expected OUT.safetensors
                                                    [--atol 1e-4] [--rtol 1e-4]
    python3 scripts/hf_transformers_check.py make-inputs DIR --output IN.safetensors [--batch 2] [--seed 0]

compare: loads DIR with the class named by config.json `architectures[0]` (eager attention, fp32, eval),
feeds every `<variant>.<name>` input of IN as a keyword argument with output_hidden_states=True, and
compares every key that both OUT and the model's outputs have (`<variant>.hidden_states.<i>`,
`last_hidden_state`, `pooler_output`, `extract_features`, `logits`). Exit status 1 on any mismatch,
on missing or unexpected weights, or when no key was compared.

make-inputs: random inputs for DIR's modality in the same layout (variants `plain` and, for vision,
`masked` with bool_masked_pos; audio and text get a padded row and an attention_mask), so that
`data2vec hf-forward DIR --inputs IN --output OUT` and `compare DIR --inputs IN --expected OUT` check
our forward pass against transformers' on any exported model.
"""
import argparse
import json
import sys
from pathlib import Path

import torch
import transformers

# The safetensors reader / writer, the variant layout and the comparison of the transcription.
from hf_reference import compare as compare_tensors
from hf_reference import has_pooler_keys, read_safetensors, variants_of, write_safetensors


def read_config(folder):
    return json.loads((Path(folder) / "config.json").read_text())


def weight_names(folder):
    path = Path(folder) / "model.safetensors"
    return list(read_safetensors(str(path))[0]) if path.exists() else []


def load_model(folder):
    config = read_config(folder)
    architecture = config["architectures"][0]
    model_class = getattr(transformers, architecture)
    kwargs = {"attn_implementation": "eager", "output_loading_info": True}
    if architecture in ("Data2VecVisionModel", "Data2VecTextModel"):
        # The pooler is a constructor argument, not a config field: the weights say whether it is there.
        kwargs["add_pooling_layer"] = has_pooler_keys(weight_names(folder))
    model, info = model_class.from_pretrained(str(folder), **kwargs)
    ignored = ("relative_position_index", "position_ids", "token_type_ids")
    problems = {kind: [k for k in info.get(kind, []) if not any(s in k for s in ignored)]
                for kind in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    return model.float().eval(), architecture, problems


def flatten_outputs(variant, out):
    flat = {}
    for name in ("last_hidden_state", "pooler_output", "extract_features", "logits"):
        value = getattr(out, name, None)
        if value is not None:
            flat[f"{variant}.{name}"] = value
    for i, hidden in enumerate(getattr(out, "hidden_states", None) or ()):
        flat[f"{variant}.hidden_states.{i}"] = hidden
    return flat


def compare(args):
    model, architecture, problems = load_model(args.dir)
    print(f"{args.dir}: {architecture}, transformers {transformers.__version__}, torch {torch.__version__}")
    failed = False
    for kind, keys in problems.items():
        if keys:
            print(f"  FAIL {kind}: {keys}")
            failed = True
    inputs, metadata = read_safetensors(args.inputs)
    expected, _ = read_safetensors(args.expected)
    actual = {}
    for variant in variants_of(inputs, metadata):
        kwargs = {k.split(".", 1)[1]: v for k, v in inputs.items() if k.startswith(variant + ".")}
        with torch.no_grad():
            actual.update(flatten_outputs(variant, model(**kwargs, output_hidden_states=True)))
    compared = len(set(actual) & set(expected))
    good, worst = compare_tensors(actual, expected, args.atol, args.rtol)
    if compared == 0:
        print("  FAIL: no output key in common with the expected file")
    failed = failed or not good or compared == 0
    print(f"{args.dir}: {'FAIL' if failed else 'PASS'} ({compared} tensors compared, "
          f"worst max|diff| {worst:.3e})")
    return 1 if failed else 0


def make_inputs(args):
    config = read_config(args.dir)
    generator = torch.Generator().manual_seed(args.seed)
    model_type = config["model_type"]
    b = args.batch
    tensors = {}
    if model_type == "data2vec-vision":
        size, channels, patch = config["image_size"], config["num_channels"], config["patch_size"]
        pixels = torch.randn(b, channels, size, size, generator=generator)
        tensors["plain.pixel_values"] = pixels
        variants = ["plain"]
        if config.get("use_mask_token", False):
            patches = (size // patch) ** 2
            tensors["masked.pixel_values"] = pixels.clone()
            tensors["masked.bool_masked_pos"] = torch.rand(b, patches, generator=generator) < 0.5
            variants.append("masked")
    elif model_type == "data2vec-audio":
        length = 8000
        values = torch.randn(b, length, generator=generator)
        mask = torch.ones(b, length, dtype=torch.int64)
        mask[-1, length * 3 // 4:] = 0
        values[-1, length * 3 // 4:] = 0
        tensors["plain.input_values"] = values
        tensors["plain.attention_mask"] = mask
        variants = ["plain"]
    elif model_type == "data2vec-text":
        length = 16
        pad = config.get("pad_token_id", 1)
        ids = torch.randint(3, config["vocab_size"], (b, length), generator=generator)
        mask = torch.ones(b, length, dtype=torch.int64)
        ids[-1, length // 2:] = pad
        mask[-1, length // 2:] = 0
        tensors["plain.input_ids"] = ids
        tensors["plain.attention_mask"] = mask
        variants = ["plain"]
    else:
        sys.exit(f"{args.dir}/config.json: model_type {model_type!r} is not a Data2Vec model")
    write_safetensors(args.output, tensors, {"format": "pt", "variants": ",".join(variants)})
    print(f"{args.output}: {', '.join(f'{k} {tuple(v.shape)}' for k, v in tensors.items())}")
    return 0


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("compare")
    p.add_argument("dir")
    p.add_argument("--inputs", required=True)
    p.add_argument("--expected", required=True)
    p.add_argument("--atol", type=float, default=1e-4)
    p.add_argument("--rtol", type=float, default=1e-4)
    p = sub.add_parser("make-inputs")
    p.add_argument("dir")
    p.add_argument("--output", required=True)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.manual_seed(0)
    return compare(args) if args.command == "compare" else make_inputs(args)


if __name__ == "__main__":
    sys.exit(main())
