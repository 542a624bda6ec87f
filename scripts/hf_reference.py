#!/usr/bin/python3
"""Hugging Face reference for the Data2Vec models: build, load, run, compare, make fixtures.

Run with Debian's /usr/bin/python3 (python3-torch 1.13, numpy); needs nothing else (no transformers,
no safetensors package: safetensors files are read and written here with struct + json).

    /usr/bin/python3 scripts/hf_reference.py verify-shared [HF_FIXTURES_DIR]
    /usr/bin/python3 scripts/hf_reference.py make-fixtures [OUT_DIR]        (default tests/fixtures/hf_options)
    /usr/bin/python3 scripts/hf_reference.py check DIR --inputs IN.safetensors [--outputs OUT.safetensors]
                                               [--atol 1e-4] [--weights FILE] [--add-pooling-layer auto|true|false]
    /usr/bin/python3 scripts/hf_reference.py forward DIR --inputs IN.safetensors --output OUT.safetensors
                                               [--weights FILE] [--add-pooling-layer auto|true|false]

What it is
----------
An eager, eval-mode PyTorch transcription of Hugging Face's

    Data2VecVisionModel, Data2VecVisionForImageClassification   (models/data2vec/modeling_data2vec_vision.py)
    Data2VecAudioModel,  Data2VecAudioForCTC                    (models/data2vec/modeling_data2vec_audio.py)
    Data2VecTextModel,   Data2VecTextForSequenceClassification  (models/data2vec/modeling_data2vec_text.py)

built from a config.json (defaults from configuration_data2vec_{vision,audio,text}.py), whose state_dict() key
names are exactly Hugging Face's, so `load_state_dict(strict=True)` proves that a weights file has no missing or
unexpected keys. Non-persistent buffers (vision relative_position_index, text embeddings.position_ids /
embeddings.token_type_ids) are not in the state dict; a loader ignores them if a file carries them (HF lists
relative_position_index in _keys_to_ignore_on_load_unexpected; old text checkpoints carry position_ids).
The architecture is config.json `architectures[0]`. The code was written from the HF files (read, not copied);
the op order follows them so that the shared fixtures (computed by HF's own code) are reproduced bit-for-bit.

Every option of the configuration classes that changes the eval forward pass is implemented; anything else
that would change it raises NotImplementedError with the option's name (hidden_act / feat_extract_activation other
than "gelu", add_adapter, position_embedding_type other than "absolute", is_decoder / add_cross_attention,
a non-native image resolution, i.e. interpolate_pos_encoding).

Fixture format (same as /work/shared/fixtures/hf, see its README.md)
-------------------------------------------------------------------
inputs.safetensors / outputs.safetensors: keys `<variant>.<name>`, `__metadata__` = {"format": "pt",
"variants": "a,b"}. For each variant every `<variant>.*` input is a keyword argument of the forward (with
output_hidden_states semantics). Outputs: `<variant>.hidden_states.<i>` (i = 0 the encoder input, i = L the last
encoder layer's output, before any final layernorm), `<variant>.last_hidden_state`, `<variant>.pooler_output`
(when there is a pooler), `<variant>.extract_features` (audio), `<variant>.logits` (task heads).
safetensors layout: u64-LE header size, compact JSON header with __metadata__ first, padded with spaces to a
multiple of 8, tensors in data order (dtype descending in the Rust Dtype enum order, then name), raw LE data.
"""

import argparse
import collections
import json
import math
import os
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
DEFAULT_FIXTURE_OUT = os.path.join("tests", "fixtures", "hf_options")
SHARED_CANDIDATES = [os.path.join(REPO_ROOT, "shared", "fixtures", "hf"), "/work/shared/fixtures/hf"]


# ================================================================================================
# safetensors I/O (pure Python)
# ================================================================================================

# name -> (rank in the Rust safetensors Dtype enum, torch dtype, numpy little-endian dtype or None)
# Rust order: BOOL, U8, I8, F8_E5M2, F8_E4M3, I16, U16, F16, BF16, I32, U32, F32, F64, I64, U64 (newer releases
# insert F4/F6/F8_E8M0/C64 in between; the relative order of the types below is the same).
ST_DTYPES = {
    "BOOL": (0, torch.bool, "|u1"),
    "U8": (1, torch.uint8, "|u1"),
    "I8": (2, torch.int8, "|i1"),
    "I16": (5, torch.int16, "<i2"),
    "F16": (7, torch.float16, "<f2"),
    "BF16": (8, torch.bfloat16, None),
    "I32": (9, torch.int32, "<i4"),
    "F32": (11, torch.float32, "<f4"),
    "F64": (12, torch.float64, "<f8"),
    "I64": (13, torch.int64, "<i8"),
}
TORCH_TO_ST = {v[1]: k for k, v in ST_DTYPES.items()}


def read_safetensors(path):
    """Returns (OrderedDict name -> tensor in file data order, metadata dict)."""
    with open(path, "rb") as f:
        raw = f.read()
    if len(raw) < 8:
        raise ValueError(f"{path}: too short for a safetensors file")
    (n,) = struct.unpack("<Q", raw[:8])
    if 8 + n > len(raw):
        raise ValueError(f"{path}: header size {n} exceeds the file size")
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    meta = header.pop("__metadata__", None) or {}
    data = raw[8 + n:]
    items = sorted(header.items(), key=lambda kv: kv[1]["data_offsets"][0])
    out = collections.OrderedDict()
    for name, info in items:
        dt = info["dtype"]
        if dt not in ST_DTYPES:
            raise ValueError(f"{path}: tensor {name}: unsupported dtype {dt}")
        _, tdt, npdt = ST_DTYPES[dt]
        b, e = info["data_offsets"]
        shape = list(info["shape"])
        buf = data[b:e]
        if dt == "BF16":
            u16 = np.frombuffer(buf, dtype="<u2").astype(np.uint32) << 16
            t = torch.from_numpy(u16.view(np.float32).copy()).to(torch.bfloat16)
        else:
            arr = np.frombuffer(buf, dtype=npdt).copy()
            t = torch.from_numpy(arr.astype(arr.dtype.newbyteorder("=")))
            if dt == "BOOL":
                t = t.to(torch.bool)
        count = 1
        for s in shape:
            count *= s
        if t.numel() != count:
            raise ValueError(f"{path}: tensor {name}: {t.numel()} elements for shape {shape}")
        out[name] = t.reshape(shape)
    return out, meta


def write_safetensors(path, tensors, metadata):
    """Writes {name: tensor} in the reference (Rust) layout; metadata values must be strings."""
    entries = []
    for name, t in tensors.items():
        t = t.detach().cpu().contiguous()
        if t.dtype not in TORCH_TO_ST:
            raise ValueError(f"{name}: dtype {t.dtype} not supported by this writer")
        entries.append((name, t, TORCH_TO_ST[t.dtype]))
    # Rust `prepare`: sort by dtype descending (enum order), then by name
    entries.sort(key=lambda e: (-ST_DTYPES[e[2]][0], e[0]))
    header = collections.OrderedDict()
    header["__metadata__"] = collections.OrderedDict((k, str(v)) for k, v in metadata.items())
    blobs, offset = [], 0
    for name, t, dt in entries:
        if dt == "BOOL":
            raw = t.to(torch.uint8).numpy().tobytes()
        elif dt == "BF16":
            raw = (t.to(torch.float32).numpy().view(np.uint32) >> 16).astype("<u2").tobytes()
        else:
            raw = t.numpy().astype(ST_DTYPES[dt][2]).tobytes()
        header[name] = collections.OrderedDict(
            [("dtype", dt), ("shape", list(t.shape)), ("data_offsets", [offset, offset + len(raw)])])
        blobs.append(raw)
        offset += len(raw)
    hb = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hb += b" " * (-len(hb) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for raw in blobs:
            f.write(raw)


def load_weights_file(path):
    """model.safetensors or pytorch_model.bin (torch.save of a plain dict) -> OrderedDict."""
    if path.endswith(".safetensors"):
        return read_safetensors(path)[0]
    sd = torch.load(path, map_location="cpu")
    if not isinstance(sd, dict):
        raise ValueError(f"{path}: expected a dict of tensors, got {type(sd).__name__}")
    return collections.OrderedDict(sd)


# ================================================================================================
# configuration (defaults = the HF configuration classes)
# ================================================================================================

# configuration_data2vec_vision.py (Data2VecVisionConfig.__init__ defaults)
VISION_DEFAULTS = dict(
    hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072, hidden_act="gelu",
    hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0, initializer_range=0.02, layer_norm_eps=1e-12,
    image_size=224, patch_size=16, num_channels=3, use_mask_token=False, use_absolute_position_embeddings=False,
    use_relative_position_bias=False, use_shared_relative_position_bias=False, layer_scale_init_value=0.1,
    drop_path_rate=0.1, use_mean_pooling=True, out_indices=[3, 5, 7, 11], pool_scales=[1, 2, 3, 6],
    use_auxiliary_head=True, auxiliary_loss_weight=0.4, auxiliary_channels=256, auxiliary_num_convs=1,
    auxiliary_concat_input=False, semantic_loss_ignore_index=255,
)
# configuration_data2vec_audio.py (Data2VecAudioConfig defaults)
AUDIO_DEFAULTS = dict(
    vocab_size=32, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", hidden_dropout=0.1, activation_dropout=0.1, attention_dropout=0.1, feat_proj_dropout=0.0,
    final_dropout=0.1, layerdrop=0.1, initializer_range=0.02, layer_norm_eps=1e-5, feat_extract_activation="gelu",
    conv_dim=[512] * 7, conv_stride=[5, 2, 2, 2, 2, 2, 2], conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_bias=False,
    num_conv_pos_embedding_groups=16, conv_pos_kernel_size=19, num_conv_pos_embeddings=5, mask_time_prob=0.05,
    mask_time_length=10, mask_time_min_masks=2, mask_feature_prob=0.0, mask_feature_length=10,
    mask_feature_min_masks=0, ctc_loss_reduction="sum", ctc_zero_infinity=False, use_weighted_layer_sum=False,
    classifier_proj_size=256, tdnn_dim=[512, 512, 512, 512, 1500], tdnn_kernel=[5, 3, 3, 1, 1],
    tdnn_dilation=[1, 2, 3, 1, 1], xvector_output_dim=512, pad_token_id=0, bos_token_id=1, eos_token_id=2,
    add_adapter=False, adapter_kernel_size=3, adapter_stride=2, num_adapter_layers=3, output_hidden_size=None,
)
# configuration_data2vec_text.py (Data2VecTextConfig defaults; position_embedding_type via kwargs)
TEXT_DEFAULTS = dict(
    vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
    hidden_act="gelu", hidden_dropout_prob=0.1, attention_probs_dropout_prob=0.1, max_position_embeddings=512,
    type_vocab_size=2, initializer_range=0.02, layer_norm_eps=1e-12, pad_token_id=1, bos_token_id=0,
    eos_token_id=2, use_cache=True, classifier_dropout=None, position_embedding_type="absolute",
    is_decoder=False, add_cross_attention=False,
)

MODEL_TYPES = {"data2vec-vision": VISION_DEFAULTS, "data2vec-audio": AUDIO_DEFAULTS, "data2vec-text": TEXT_DEFAULTS}

# architecture -> (model_type, base prefix or "" for the bare model)
ARCHITECTURES = {
    "Data2VecVisionModel": ("data2vec-vision", ""),
    "Data2VecVisionForImageClassification": ("data2vec-vision", "data2vec_vision"),
    "Data2VecAudioModel": ("data2vec-audio", ""),
    "Data2VecAudioForCTC": ("data2vec-audio", "data2vec_audio"),
    "Data2VecTextModel": ("data2vec-text", ""),
    "Data2VecTextForSequenceClassification": ("data2vec-text", "data2vec_text"),
}
BASE_ARCH = {"data2vec-vision": "Data2VecVisionModel", "data2vec-audio": "Data2VecAudioModel",
             "data2vec-text": "Data2VecTextModel"}


class Config:
    """Attribute view of config.json merged over the HF defaults, plus the derived values HF computes."""

    def __init__(self, d):
        d = dict(d)
        mt = d.get("model_type")
        if mt not in MODEL_TYPES:
            raise NotImplementedError(f"model_type {mt!r} is not one of {sorted(MODEL_TYPES)}")
        merged = dict(MODEL_TYPES[mt])
        merged.update(d)
        self.__dict__.update(merged)
        self.raw = d
        archs = d.get("architectures") or [BASE_ARCH[mt]]
        self.architecture = archs[0]
        if self.architecture not in ARCHITECTURES:
            raise NotImplementedError(f"architectures[0] = {self.architecture!r} is not supported "
                                      f"(supported: {', '.join(ARCHITECTURES)})")
        if ARCHITECTURES[self.architecture][0] != mt:
            raise ValueError(f"architecture {self.architecture} does not belong to model_type {mt}")
        # PretrainedConfig: num_labels = len(id2label) (config.json stores id2label/label2id, not num_labels)
        if isinstance(d.get("id2label"), dict):
            self.num_labels = len(d["id2label"])
        else:
            self.num_labels = int(d.get("num_labels", 2))
        if mt == "data2vec-audio":
            # Data2VecAudioConfig: output_hidden_size = output_hidden_size or hidden_size;
            # num_feat_extract_layers = len(conv_dim)
            self.output_hidden_size = self.output_hidden_size or self.hidden_size
            self.num_feat_extract_layers = len(self.conv_dim)
            if not (len(self.conv_dim) == len(self.conv_kernel) == len(self.conv_stride)):
                raise ValueError("len(conv_dim), len(conv_kernel), len(conv_stride) differ: "
                                 f"{len(self.conv_dim)}, {len(self.conv_kernel)}, {len(self.conv_stride)}")
        self.check_supported()

    def check_supported(self):
        if self.hidden_act != "gelu":
            raise NotImplementedError(f"hidden_act={self.hidden_act!r}: only 'gelu' is implemented")
        if self.hidden_size % self.num_attention_heads != 0:
            raise ValueError(f"hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                             f"{self.num_attention_heads}")
        if self.model_type == "data2vec-vision":
            img, patch = pair(self.image_size), pair(self.patch_size)
            grid = (img[0] // patch[0], img[1] // patch[1])
            if grid[0] != grid[1] and (self.use_relative_position_bias or self.use_shared_relative_position_bias
                                       or self.use_absolute_position_embeddings):
                # HF releases disagree here: v4 looks the tables up / adds position_embeddings as they are; the v5
                # file (modeling_data2vec_vision.py, Data2VecVisionRelativePositionBias.forward) reshapes the table
                # as (width, height) and bilinearly resizes it to (height, width), and its interpolate_pos_encoding
                # resamples whenever height != width. No single reference exists.
                raise NotImplementedError(f"non-square patch grid {grid} with relative / absolute position "
                                          "embeddings (HF versions compute it differently)")
        if self.model_type == "data2vec-audio":
            if self.feat_extract_activation != "gelu":
                raise NotImplementedError(f"feat_extract_activation={self.feat_extract_activation!r}: only 'gelu'")
            if self.add_adapter:
                raise NotImplementedError("add_adapter=true (Data2VecAudioAdapter) is not implemented")
        if self.model_type == "data2vec-text":
            if self.position_embedding_type != "absolute":
                raise NotImplementedError(f"position_embedding_type={self.position_embedding_type!r}: "
                                          "only 'absolute' is implemented")
            if self.is_decoder or self.add_cross_attention:
                raise NotImplementedError("is_decoder / add_cross_attention (decoder use) is not implemented")


def pair(x):
    return tuple(x) if isinstance(x, (list, tuple)) else (x, x)


def gelu(x):
    # ACT2FN["gelu"] = GELUActivation -> nn.functional.gelu (exact, erf)
    return F.gelu(x)


# ================================================================================================
# Vision: modeling_data2vec_vision.py (BEiT copy)
# ================================================================================================

class VisionPatchEmbeddings(nn.Module):
    # Data2VecVisionPatchEmbeddings: Conv2d(C, D, k=patch, s=patch) -> flatten(2).transpose(1, 2)
    def __init__(self, cfg):
        super().__init__()
        img, patch = pair(cfg.image_size), pair(cfg.patch_size)
        self.num_channels = cfg.num_channels
        self.patch_shape = (img[0] // patch[0], img[1] // patch[1])
        self.num_patches = self.patch_shape[0] * self.patch_shape[1]
        self.projection = nn.Conv2d(cfg.num_channels, cfg.hidden_size, kernel_size=patch, stride=patch)

    def forward(self, pixel_values):
        if pixel_values.shape[1] != self.num_channels:
            raise ValueError(f"pixel_values has {pixel_values.shape[1]} channels, config num_channels = "
                             f"{self.num_channels}")
        x = self.projection(pixel_values)
        return x.flatten(2).transpose(1, 2), (x.shape[2], x.shape[3])


class VisionEmbeddings(nn.Module):
    # Data2VecVisionEmbeddings
    def __init__(self, cfg):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.hidden_size)) if cfg.use_mask_token else None
        self.patch_embeddings = VisionPatchEmbeddings(cfg)
        n = self.patch_embeddings.num_patches
        self.position_embeddings = (nn.Parameter(torch.zeros(1, n + 1, cfg.hidden_size))
                                    if cfg.use_absolute_position_embeddings else None)

    def forward(self, pixel_values, bool_masked_pos=None):
        emb, grid = self.patch_embeddings(pixel_values)
        if grid != self.patch_embeddings.patch_shape:
            # HF would interpolate the position embeddings / relative tables (interpolate_pos_encoding)
            raise NotImplementedError(f"input patch grid {grid} != config grid {self.patch_embeddings.patch_shape}: "
                                      "non-native resolution (interpolate_pos_encoding) is not implemented")
        b, n, _ = emb.shape
        if bool_masked_pos is not None:
            if self.mask_token is None:
                raise ValueError("bool_masked_pos given but use_mask_token is false (no embeddings.mask_token)")
            mask_tokens = self.mask_token.expand(b, n, -1)
            w = bool_masked_pos.unsqueeze(-1).type_as(mask_tokens)
            emb = emb * (1 - w) + mask_tokens * w
        emb = torch.cat((self.cls_token.expand(b, -1, -1), emb), dim=1)
        if self.position_embeddings is not None:
            # interpolate_pos_encoding returns the table unchanged at the native (square) size
            emb = emb + self.position_embeddings
        return emb


def vision_relative_position_index(window_size):
    """Data2VecVisionRelativePositionBias.generate_relative_position_index, [N+1, N+1] int64."""
    wh, ww = window_size
    num_rel = (2 * wh - 1) * (2 * ww - 1) + 3
    coords = torch.stack(torch.meshgrid(torch.arange(wh), torch.arange(ww), indexing="ij"))  # 2, Wh, Ww
    flat = torch.flatten(coords, 1)
    rel = (flat[:, :, None] - flat[:, None, :]).permute(1, 2, 0).contiguous()  # N, N, 2
    rel[:, :, 0] += wh - 1
    rel[:, :, 1] += ww - 1
    rel[:, :, 0] *= 2 * ww - 1
    idx = torch.zeros((wh * ww + 1,) * 2, dtype=rel.dtype)
    idx[1:, 1:] = rel.sum(-1)
    idx[0, 0:] = num_rel - 3  # CLS query -> any key
    idx[0:, 0] = num_rel - 2  # any query -> CLS key
    idx[0, 0] = num_rel - 1  # CLS -> CLS
    return idx


class VisionRelativePositionBias(nn.Module):
    # Data2VecVisionRelativePositionBias. The v5 file runs the table through a same-size bilinear interpolate
    # first, which is the identity at the native resolution (the only one supported here); older releases do
    # a plain lookup. relative_position_index is computed, never a (persistent) buffer.
    def __init__(self, cfg, window_size):
        super().__init__()
        self.window_size = tuple(window_size)
        self.num_relative_distance = (2 * window_size[0] - 1) * (2 * window_size[1] - 1) + 3
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros(self.num_relative_distance, cfg.num_attention_heads))
        self._index = vision_relative_position_index(self.window_size)

    def forward(self):
        n = self.window_size[0] * self.window_size[1] + 1
        bias = self.relative_position_bias_table[self._index.view(-1)].view(n, n, -1)
        return bias.permute(2, 0, 1).contiguous().unsqueeze(0)  # [1, heads, N+1, N+1]


class VisionSelfAttention(nn.Module):
    # Data2VecVisionSelfAttention (eager): key has no bias; scores / sqrt(d) + per-layer bias + shared bias
    def __init__(self, cfg, window_size=None):
        super().__init__()
        self.h = cfg.num_attention_heads
        self.d = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, self.h * self.d)
        self.key = nn.Linear(cfg.hidden_size, self.h * self.d, bias=False)
        self.value = nn.Linear(cfg.hidden_size, self.h * self.d)
        self.relative_position_bias = VisionRelativePositionBias(cfg, window_size) if window_size else None

    def forward(self, x, shared_bias=None):
        b, n, _ = x.shape
        q = self.query(x).view(b, -1, self.h, self.d).transpose(1, 2)
        k = self.key(x).view(b, -1, self.h, self.d).transpose(1, 2)
        v = self.value(x).view(b, -1, self.h, self.d).transpose(1, 2)
        scores = torch.matmul(q, k.transpose(-1, -2))
        scores = scores / math.sqrt(self.d)
        if self.relative_position_bias is not None:
            scores = scores + self.relative_position_bias()
        if shared_bias is not None:
            scores = scores + shared_bias
        probs = F.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3).contiguous()
        return ctx.view(b, n, self.h * self.d)


class VisionSelfOutput(nn.Module):
    # Data2VecVisionSelfOutput: dense only (the residual is in the layer)
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x):
        return self.dense(x)


class VisionAttention(nn.Module):
    def __init__(self, cfg, window_size=None):
        super().__init__()
        self.attention = VisionSelfAttention(cfg, window_size)
        self.output = VisionSelfOutput(cfg)

    def forward(self, x, shared_bias=None):
        return self.output(self.attention(x, shared_bias))


class DenseAct(nn.Module):
    # *Intermediate: dense -> gelu
    def __init__(self, d_in, d_out):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)

    def forward(self, x):
        return gelu(self.dense(x))


class Dense(nn.Module):
    def __init__(self, d_in, d_out):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)

    def forward(self, x):
        return self.dense(x)


class VisionLayer(nn.Module):
    # Data2VecVisionLayer (pre-LN, optional layer scale lambda_1/lambda_2; drop_path is identity in eval)
    def __init__(self, cfg, window_size=None):
        super().__init__()
        self.attention = VisionAttention(cfg, window_size)
        self.intermediate = DenseAct(cfg.hidden_size, cfg.intermediate_size)
        self.output = Dense(cfg.intermediate_size, cfg.hidden_size)
        self.layernorm_before = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layernorm_after = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        if cfg.layer_scale_init_value > 0:
            self.lambda_1 = nn.Parameter(cfg.layer_scale_init_value * torch.ones(cfg.hidden_size))
            self.lambda_2 = nn.Parameter(cfg.layer_scale_init_value * torch.ones(cfg.hidden_size))
        else:
            self.lambda_1, self.lambda_2 = None, None

    def forward(self, x, shared_bias=None):
        a = self.attention(self.layernorm_before(x), shared_bias)
        if self.lambda_1 is not None:
            a = self.lambda_1 * a
        h = a + x
        y = self.output(self.intermediate(self.layernorm_after(h)))
        if self.lambda_2 is not None:
            y = self.lambda_2 * y
        return y + h


class VisionEncoder(nn.Module):
    # Data2VecVisionEncoder: optional shared table (encoder.relative_position_bias), computed once per layer
    def __init__(self, cfg, window_size):
        super().__init__()
        self.relative_position_bias = (VisionRelativePositionBias(cfg, window_size)
                                       if cfg.use_shared_relative_position_bias else None)
        self.layer = nn.ModuleList([
            VisionLayer(cfg, window_size if cfg.use_relative_position_bias else None)
            for _ in range(cfg.num_hidden_layers)])

    def forward(self, x):
        hidden = []
        for layer in self.layer:
            hidden.append(x)
            shared = self.relative_position_bias() if self.relative_position_bias is not None else None
            x = layer(x, shared)
        hidden.append(x)
        return x, hidden


class VisionPooler(nn.Module):
    # Data2VecVisionPooler: mean pooling -> layernorm(mean of patch tokens); else the CLS token
    def __init__(self, cfg):
        super().__init__()
        self.layernorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps) if cfg.use_mean_pooling else None

    def forward(self, x):
        if self.layernorm is not None:
            return self.layernorm(x[:, 1:, :].mean(1))
        return x[:, 0]


class Data2VecVisionModel(nn.Module):
    # Data2VecVisionModel(config, add_pooling_layer=False by default)
    input_names = ("pixel_values", "bool_masked_pos")

    def __init__(self, cfg, add_pooling_layer=False):
        super().__init__()
        self.embeddings = VisionEmbeddings(cfg)
        self.encoder = VisionEncoder(cfg, self.embeddings.patch_embeddings.patch_shape)
        self.layernorm = nn.Identity() if cfg.use_mean_pooling else nn.LayerNorm(cfg.hidden_size,
                                                                                 eps=cfg.layer_norm_eps)
        self.pooler = VisionPooler(cfg) if add_pooling_layer else None

    def forward(self, pixel_values, bool_masked_pos=None):
        x = self.embeddings(pixel_values, bool_masked_pos)
        x, hidden = self.encoder(x)
        out = collections.OrderedDict()
        for i, h in enumerate(hidden):
            out[f"hidden_states.{i}"] = h
        seq = self.layernorm(x)
        out["last_hidden_state"] = seq
        if self.pooler is not None:
            out["pooler_output"] = self.pooler(seq)
        return out


class Data2VecVisionForImageClassification(nn.Module):
    # base under data2vec_vision (add_pooling_layer=True), classifier Linear(D, num_labels) on pooler_output.
    # HF's forward takes no bool_masked_pos.
    input_names = ("pixel_values",)

    def __init__(self, cfg):
        super().__init__()
        self.data2vec_vision = Data2VecVisionModel(cfg, add_pooling_layer=True)
        self.classifier = nn.Linear(cfg.hidden_size, cfg.num_labels) if cfg.num_labels > 0 else nn.Identity()

    def forward(self, pixel_values):
        out = self.data2vec_vision(pixel_values)
        out["logits"] = self.classifier(out["pooler_output"])
        return out


# ================================================================================================
# Audio: modeling_data2vec_audio.py (wav2vec2 / BART copies)
# ================================================================================================

class AudioConvLayer(nn.Module):
    # Data2VecAudioConvLayer: conv -> LayerNorm over channels (default eps 1e-5, affine) -> gelu
    def __init__(self, cfg, i):
        super().__init__()
        c_in = cfg.conv_dim[i - 1] if i > 0 else 1
        self.conv = nn.Conv1d(c_in, cfg.conv_dim[i], kernel_size=cfg.conv_kernel[i], stride=cfg.conv_stride[i],
                              bias=cfg.conv_bias)
        self.layer_norm = nn.LayerNorm(cfg.conv_dim[i], elementwise_affine=True)

    def forward(self, x):
        x = self.conv(x)
        x = self.layer_norm(x.transpose(-2, -1)).transpose(-2, -1)
        return gelu(x)


class AudioFeatureEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.conv_layers = nn.ModuleList([AudioConvLayer(cfg, i) for i in range(cfg.num_feat_extract_layers)])

    def forward(self, input_values):
        x = input_values[:, None]
        for layer in self.conv_layers:
            x = layer(x)
        return x


class AudioFeatureProjection(nn.Module):
    # Data2VecAudioFeatureProjection: returns (projection(LN(x)), LN(x)); LN eps = layer_norm_eps
    def __init__(self, cfg):
        super().__init__()
        self.layer_norm = nn.LayerNorm(cfg.conv_dim[-1], eps=cfg.layer_norm_eps)
        self.projection = nn.Linear(cfg.conv_dim[-1], cfg.hidden_size)

    def forward(self, x):
        norm = self.layer_norm(x)
        return self.projection(norm), norm


class AudioPositionalConvLayer(nn.Module):
    # Data2VecAudioPositionalConvLayer: grouped conv (padding k//2) -> drop last frame if k even
    # (Data2VecAudioPadLayer) -> LayerNorm without affine params (eps 1e-5) -> gelu
    def __init__(self, cfg):
        super().__init__()
        k = cfg.conv_pos_kernel_size
        self.conv = nn.Conv1d(cfg.hidden_size, cfg.hidden_size, kernel_size=k, padding=k // 2,
                              groups=cfg.num_conv_pos_embedding_groups)
        self.num_pad_remove = 1 if k % 2 == 0 else 0
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, elementwise_affine=False)

    def forward(self, x):
        x = self.conv(x)
        if self.num_pad_remove > 0:
            x = x[:, :, :-self.num_pad_remove]
        x = self.layer_norm(x.transpose(1, 2)).transpose(1, 2)
        return gelu(x)


class AudioPositionalConvEmbedding(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layers = nn.ModuleList([AudioPositionalConvLayer(cfg) for _ in range(cfg.num_conv_pos_embeddings)])

    def forward(self, x):
        x = x.transpose(1, 2)
        for layer in self.layers:
            x = layer(x)
        return x.transpose(1, 2)


class AudioAttention(nn.Module):
    # Data2VecAudioAttention (BartAttention, eager): q scaled by head_dim**-0.5 before q @ k^T; mask added
    def __init__(self, cfg):
        super().__init__()
        e = cfg.hidden_size
        self.h = cfg.num_attention_heads
        self.d = e // self.h
        self.scaling = self.d ** -0.5
        self.k_proj = nn.Linear(e, e)
        self.v_proj = nn.Linear(e, e)
        self.q_proj = nn.Linear(e, e)
        self.out_proj = nn.Linear(e, e)

    def _shape(self, t, n, b):
        return t.view(b, n, self.h, self.d).transpose(1, 2).contiguous()

    def forward(self, x, attention_mask=None):
        b, n, e = x.shape
        q = self.q_proj(x) * self.scaling
        k = self._shape(self.k_proj(x), -1, b)
        v = self._shape(self.v_proj(x), -1, b)
        shp = (b * self.h, -1, self.d)
        q = self._shape(q, n, b).view(*shp)
        k = k.reshape(*shp)
        v = v.reshape(*shp)
        w = torch.bmm(q, k.transpose(1, 2))
        if attention_mask is not None:
            w = (w.view(b, self.h, n, n) + attention_mask).view(b * self.h, n, n)
        w = F.softmax(w, dim=-1)
        o = torch.bmm(w, v).view(b, self.h, n, self.d).transpose(1, 2).reshape(b, n, e)
        return self.out_proj(o)


class AudioFeedForward(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.intermediate_dense = nn.Linear(cfg.hidden_size, cfg.intermediate_size)
        self.output_dense = nn.Linear(cfg.intermediate_size, cfg.hidden_size)

    def forward(self, x):
        return self.output_dense(gelu(self.intermediate_dense(x)))


class AudioEncoderLayer(nn.Module):
    # Data2VecAudioEncoderLayer (post-LN): x = LN(x + attn(x)); x = final_LN(x + FFN(x))
    def __init__(self, cfg):
        super().__init__()
        self.attention = AudioAttention(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.feed_forward = AudioFeedForward(cfg)
        self.final_layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)

    def forward(self, x, attention_mask=None):
        x = self.layer_norm(x + self.attention(x, attention_mask))
        x = x + self.feed_forward(x)
        return self.final_layer_norm(x)


class AudioEncoder(nn.Module):
    # Data2VecAudioEncoder (Wav2Vec2Encoder): zero padded frames, additive finfo.min key mask,
    # + pos conv, layer_norm, layers. hidden_states.0 = after encoder.layer_norm.
    def __init__(self, cfg):
        super().__init__()
        self.pos_conv_embed = AudioPositionalConvEmbedding(cfg)
        self.layer_norm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.layers = nn.ModuleList([AudioEncoderLayer(cfg) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x, frame_mask=None):
        add_mask = None
        if frame_mask is not None:
            x = x.clone()
            x[~frame_mask.unsqueeze(-1).repeat(1, 1, x.shape[2])] = 0
            m = 1.0 - frame_mask[:, None, None, :].to(dtype=x.dtype)
            m = m * torch.finfo(x.dtype).min
            add_mask = m.expand(m.shape[0], 1, m.shape[-1], m.shape[-1])
        x = x + self.pos_conv_embed(x)
        x = self.layer_norm(x)
        hidden = []
        for layer in self.layers:
            hidden.append(x)
            x = layer(x, add_mask)
        hidden.append(x)
        return x, hidden


def audio_output_lengths(cfg, lengths):
    # _get_feat_extract_output_lengths: floor((L - k) / s) + 1 per conv layer (no adapter)
    for k, s in zip(cfg.conv_kernel, cfg.conv_stride):
        lengths = torch.div(lengths - k, s, rounding_mode="floor") + 1
    return lengths


def audio_frame_mask(cfg, num_frames, attention_mask):
    # _get_feature_vector_attention_mask, same ops as HF (flip-cumsum-flip of a one-hot at length - 1)
    lengths = audio_output_lengths(cfg, attention_mask.cumsum(dim=-1)[:, -1]).to(torch.long)
    b = attention_mask.shape[0]
    m = torch.zeros((b, num_frames), dtype=attention_mask.dtype)
    m[(torch.arange(b), lengths - 1)] = 1
    return m.flip([-1]).cumsum(-1).flip([-1]).bool()


class Data2VecAudioModel(nn.Module):
    input_names = ("input_values", "attention_mask", "mask_time_indices")

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        self.feature_extractor = AudioFeatureEncoder(cfg)
        self.feature_projection = AudioFeatureProjection(cfg)
        # "model only needs masking vector if mask prob is > 0.0"
        if cfg.mask_time_prob > 0.0 or cfg.mask_feature_prob > 0.0:
            self.masked_spec_embed = nn.Parameter(torch.zeros(cfg.hidden_size))
        else:
            self.masked_spec_embed = None
        self.encoder = AudioEncoder(cfg)

    def forward(self, input_values, attention_mask=None, mask_time_indices=None):
        feats = self.feature_extractor(input_values).transpose(1, 2)
        frame_mask = audio_frame_mask(self.cfg, feats.shape[1], attention_mask) if attention_mask is not None \
            else None
        x, extract_features = self.feature_projection(feats)
        # _mask_hidden_states in eval: only an explicit mask_time_indices is applied
        if mask_time_indices is not None and getattr(self.cfg, "apply_spec_augment", True):
            if self.masked_spec_embed is None:
                raise ValueError("mask_time_indices given but the model has no masked_spec_embed "
                                 "(mask_time_prob and mask_feature_prob are 0)")
            x = x.clone()
            x[mask_time_indices.bool()] = self.masked_spec_embed.to(x.dtype)
        x, hidden = self.encoder(x, frame_mask)
        out = collections.OrderedDict()
        for i, h in enumerate(hidden):
            out[f"hidden_states.{i}"] = h
        out["last_hidden_state"] = x
        out["extract_features"] = extract_features
        return out


class Data2VecAudioForCTC(nn.Module):
    # base under data2vec_audio, lm_head Linear(hidden_size (output_hidden_size with an adapter), vocab_size)
    input_names = ("input_values", "attention_mask")

    def __init__(self, cfg):
        super().__init__()
        if cfg.vocab_size is None:
            raise ValueError("Data2VecAudioForCTC needs vocab_size in config.json")
        self.data2vec_audio = Data2VecAudioModel(cfg)
        d = cfg.output_hidden_size if cfg.add_adapter else cfg.hidden_size
        self.lm_head = nn.Linear(d, cfg.vocab_size)

    def forward(self, input_values, attention_mask=None):
        out = self.data2vec_audio(input_values, attention_mask)
        out["logits"] = self.lm_head(out["last_hidden_state"])
        return out


# ================================================================================================
# Text: modeling_data2vec_text.py (RoBERTa / BERT copies)
# ================================================================================================

def text_position_ids(input_ids, padding_idx):
    # create_position_ids_from_input_ids: real tokens padding_idx+1, +2, ...; pads get padding_idx
    mask = input_ids.ne(padding_idx).int()
    inc = torch.cumsum(mask, dim=1).type_as(mask) * mask
    return inc.long() + padding_idx


class TextEmbeddings(nn.Module):
    # Data2VecTextForTextEmbeddings (RobertaEmbeddings). position_ids / token_type_ids buffers are
    # non-persistent in HF; they are plain attributes here (never in the state dict).
    def __init__(self, cfg):
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.hidden_size, padding_idx=cfg.pad_token_id)
        self.position_embeddings = nn.Embedding(cfg.max_position_embeddings, cfg.hidden_size,
                                                padding_idx=cfg.pad_token_id)
        self.token_type_embeddings = nn.Embedding(cfg.type_vocab_size, cfg.hidden_size)
        self.LayerNorm = nn.LayerNorm(cfg.hidden_size, eps=cfg.layer_norm_eps)
        self.padding_idx = cfg.pad_token_id

    def forward(self, input_ids, token_type_ids=None, position_ids=None):
        if position_ids is None:
            position_ids = text_position_ids(input_ids, self.padding_idx)
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.word_embeddings(input_ids) + self.token_type_embeddings(token_type_ids)
        x = x + self.position_embeddings(position_ids)
        return self.LayerNorm(x)


class TextSelfAttention(nn.Module):
    # Data2VecTextSelfAttention (eager): q @ k^T / sqrt(d) + additive mask
    def __init__(self, cfg):
        super().__init__()
        self.h = cfg.num_attention_heads
        self.d = cfg.hidden_size // cfg.num_attention_heads
        self.query = nn.Linear(cfg.hidden_size, self.h * self.d)
        self.key = nn.Linear(cfg.hidden_size, self.h * self.d)
        self.value = nn.Linear(cfg.hidden_size, self.h * self.d)

    def _t(self, x):
        return x.view(x.size()[:-1] + (self.h, self.d)).permute(0, 2, 1, 3)

    def forward(self, x, mask):
        q = self._t(self.query(x))
        k = self._t(self.key(x))
        v = self._t(self.value(x))
        s = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.d)
        s = s + mask
        p = F.softmax(s, dim=-1)
        c = torch.matmul(p, v).permute(0, 2, 1, 3).contiguous()
        return c.view(c.size()[:-2] + (self.h * self.d,))


class DenseLN(nn.Module):
    # BertSelfOutput / BertOutput: LayerNorm(dense(x) + residual)
    def __init__(self, d_in, d_out, eps):
        super().__init__()
        self.dense = nn.Linear(d_in, d_out)
        self.LayerNorm = nn.LayerNorm(d_out, eps=eps)

    def forward(self, x, residual):
        return self.LayerNorm(self.dense(x) + residual)


class TextAttention(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.self = TextSelfAttention(cfg)
        self.output = DenseLN(cfg.hidden_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x, mask):
        return self.output(self.self(x, mask), x)


class TextLayer(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.attention = TextAttention(cfg)
        self.intermediate = DenseAct(cfg.hidden_size, cfg.intermediate_size)
        self.output = DenseLN(cfg.intermediate_size, cfg.hidden_size, cfg.layer_norm_eps)

    def forward(self, x, mask):
        a = self.attention(x, mask)
        return self.output(self.intermediate(a), a)


class TextEncoder(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.layer = nn.ModuleList([TextLayer(cfg) for _ in range(cfg.num_hidden_layers)])

    def forward(self, x, mask):
        hidden = []
        for layer in self.layer:
            hidden.append(x)
            x = layer(x, mask)
        hidden.append(x)
        return x, hidden


class TextPooler(nn.Module):
    # BertPooler: tanh(dense(first token))
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)

    def forward(self, x):
        return torch.tanh(self.dense(x[:, 0]))


class Data2VecTextModel(nn.Module):
    # Data2VecTextModel(config, add_pooling_layer=True by default)
    input_names = ("input_ids", "attention_mask", "token_type_ids", "position_ids")

    def __init__(self, cfg, add_pooling_layer=True):
        super().__init__()
        self.embeddings = TextEmbeddings(cfg)
        self.encoder = TextEncoder(cfg)
        self.pooler = TextPooler(cfg) if add_pooling_layer else None

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        b, n = input_ids.shape
        if attention_mask is None:
            attention_mask = torch.ones((b, n))
        # ModuleUtilsMixin.get_extended_attention_mask (2D, encoder): (1 - mask) * finfo(fp32).min
        ext = attention_mask[:, None, None, :].to(dtype=torch.float32)
        ext = (1.0 - ext) * torch.finfo(torch.float32).min
        x = self.embeddings(input_ids, token_type_ids, position_ids)
        x, hidden = self.encoder(x, ext)
        out = collections.OrderedDict()
        for i, h in enumerate(hidden):
            out[f"hidden_states.{i}"] = h
        out["last_hidden_state"] = x
        if self.pooler is not None:
            out["pooler_output"] = self.pooler(x)
        return out


class TextClassificationHead(nn.Module):
    # Data2VecTextClassificationHead (RobertaClassificationHead): out_proj(tanh(dense(x[:, 0])))
    def __init__(self, cfg):
        super().__init__()
        self.dense = nn.Linear(cfg.hidden_size, cfg.hidden_size)
        self.out_proj = nn.Linear(cfg.hidden_size, cfg.num_labels)

    def forward(self, x):
        return self.out_proj(torch.tanh(self.dense(x[:, 0, :])))


class Data2VecTextForSequenceClassification(nn.Module):
    input_names = ("input_ids", "attention_mask", "token_type_ids", "position_ids")

    def __init__(self, cfg):
        super().__init__()
        self.data2vec_text = Data2VecTextModel(cfg, add_pooling_layer=False)
        self.classifier = TextClassificationHead(cfg)

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, position_ids=None):
        out = self.data2vec_text(input_ids, attention_mask, token_type_ids, position_ids)
        out["logits"] = self.classifier(out["last_hidden_state"])
        return out


# ================================================================================================
# building, loading, running
# ================================================================================================

# Non-persistent HF buffers that checkpoints written by other / older versions may carry: ignored on load.
IGNORED_SUFFIXES = ("relative_position_index", "embeddings.position_ids", "embeddings.token_type_ids")


def is_ignored_key(k):
    return any(k == s or k.endswith("." + s) for s in IGNORED_SUFFIXES)


def has_pooler_keys(keys, prefix=""):
    p = (prefix + "." if prefix else "") + "pooler."
    return any(k.startswith(p) for k in keys)


def build_model(cfg, add_pooling_layer="auto", weight_keys=None):
    """Model for cfg.architecture. add_pooling_layer only applies to the bare vision / text models (HF's
    constructor argument, not a config attribute): 'auto' = True if the weights carry pooler.* keys, else HF's
    default (vision False, text True)."""
    arch = cfg.architecture
    note = ""
    if arch in ("Data2VecVisionModel", "Data2VecTextModel"):
        hf_default = arch == "Data2VecTextModel"
        if add_pooling_layer == "auto":
            pool = hf_default or (weight_keys is not None and has_pooler_keys(weight_keys))
            note = f"add_pooling_layer={pool} (auto: HF default {hf_default}" + (
                ", weights carry pooler.*)" if pool and not hf_default else ")")
        else:
            pool = add_pooling_layer in (True, "true")
            note = f"add_pooling_layer={pool} (given)"
        model = (Data2VecVisionModel if arch == "Data2VecVisionModel" else Data2VecTextModel)(cfg, pool)
    elif arch == "Data2VecAudioModel":
        model = Data2VecAudioModel(cfg)
    elif arch == "Data2VecVisionForImageClassification":
        model = Data2VecVisionForImageClassification(cfg)
    elif arch == "Data2VecAudioForCTC":
        model = Data2VecAudioForCTC(cfg)
    elif arch == "Data2VecTextForSequenceClassification":
        model = Data2VecTextForSequenceClassification(cfg)
    else:  # unreachable: Config checks
        raise NotImplementedError(arch)
    model.eval()
    return model, note


def load_config(folder):
    with open(os.path.join(folder, "config.json")) as f:
        return Config(json.load(f))


def strict_load(model, state):
    """load_state_dict(strict=True) after dropping ignorable buffers. Returns (ignored, missing, unexpected,
    shape_mismatch) lists; loads only when all are empty."""
    ignored = [k for k in state if is_ignored_key(k)]
    state = collections.OrderedDict((k, v) for k, v in state.items() if not is_ignored_key(k))
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    mismatch = [f"{k}: file {list(state[k].shape)} vs model {list(own[k].shape)}"
                for k in own if k in state and tuple(state[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or mismatch):
        state = collections.OrderedDict((k, v.to(torch.float32) if v.is_floating_point() else v)
                                        for k, v in state.items())
        model.load_state_dict(state, strict=True)
    return ignored, missing, unexpected, mismatch


def variants_of(tensors, meta):
    if meta.get("variants"):
        return [v for v in meta["variants"].split(",") if v]
    seen = []
    for k in tensors:
        v = k.split(".", 1)[0]
        if v not in seen:
            seen.append(v)
    return seen


@torch.no_grad()
def run_variants(model, inputs, meta, dtype=torch.float32):
    """inputs {variant.name: tensor} -> OrderedDict {variant.output: tensor}. Float inputs are cast to dtype
    (the model's parameter dtype: fp32, or fp64 for the rounding cross-check of verify-shared)."""
    out = collections.OrderedDict()
    for v in variants_of(inputs, meta):
        kw = {k.split(".", 1)[1]: t for k, t in inputs.items() if k.split(".", 1)[0] == v}
        bad = [k for k in kw if k not in model.input_names]
        if bad:
            raise ValueError(f"variant {v}: inputs {bad} are not arguments of {type(model).__name__} "
                             f"(accepted: {', '.join(model.input_names)})")
        for k in list(kw):
            if kw[k].is_floating_point():
                kw[k] = kw[k].to(dtype)
        for name, t in model(**kw).items():
            out[f"{v}.{name}"] = t.detach().contiguous()
    return out


def compare(actual, expected, atol, rtol, label=""):
    """Prints max |diff| per key present in both; returns (ok, worst)."""
    ok, worst = True, 0.0
    for k in expected:
        if k not in actual:
            print(f"  {label}{k}: in the expected outputs only (not compared)")
            continue
        a, e = actual[k], expected[k]
        if tuple(a.shape) != tuple(e.shape):
            print(f"  {label}{k}: SHAPE MISMATCH computed {list(a.shape)} vs expected {list(e.shape)}")
            ok = False
            continue
        a64, e64 = a.to(torch.float64), e.to(torch.float64)
        d = (a64 - e64).abs()
        md = d.max().item() if d.numel() else 0.0
        good = bool((d <= atol + rtol * e64.abs()).all().item())
        worst = max(worst, md)
        ok = ok and good
        print(f"  {label}{k}: {list(e.shape)} max|diff| = {md:.3e}{'' if good else '  FAIL'}")
    for k in actual:
        if k not in expected:
            print(f"  {label}{k}: computed only (not compared)")
    return ok, worst


def weights_path(folder, given=None):
    if given:
        return given
    for name in ("model.safetensors", "pytorch_model.bin"):
        p = os.path.join(folder, name)
        if os.path.exists(p):
            return p
    raise FileNotFoundError(f"{folder}: no model.safetensors or pytorch_model.bin")


def report_load(path, ignored, missing, unexpected, mismatch, prefix=""):
    print(f"weights: {path}")
    if ignored:
        print(f"  ignored non-persistent buffers ({len(ignored)}): {', '.join(ignored)}")
    for name, lst in (("missing", missing), ("unexpected", unexpected), ("shape mismatch", mismatch)):
        if lst:
            print(f"  {name} keys ({len(lst)}):")
            for k in lst:
                print(f"    {k}")
    if missing and unexpected and prefix:
        missing_set = set(missing)
        if sum(prefix + "." + k in missing_set for k in unexpected) >= len(unexpected) // 2 + 1:
            print(f"  hint: {type_hint(prefix)} expects the base model under '{prefix}.'; the file looks like a "
                  "bare base-model checkpoint (HF's from_pretrained would add the prefix and init the head randomly)")
    return not (missing or unexpected or mismatch)


def type_hint(prefix):
    return {"data2vec_vision": "Data2VecVisionForImageClassification", "data2vec_audio": "Data2VecAudioForCTC",
            "data2vec_text": "Data2VecTextForSequenceClassification"}.get(prefix, "the head model")


def open_model(folder, weights=None, add_pooling_layer="auto"):
    cfg = load_config(folder)
    wpath = weights_path(folder, weights)
    state = load_weights_file(wpath)
    model, note = build_model(cfg, add_pooling_layer, list(state.keys()))
    print(f"model: {cfg.architecture} from {os.path.join(folder, 'config.json')}" + (f"; {note}" if note else ""))
    res = strict_load(model, state)
    ok = report_load(wpath, *res, prefix=ARCHITECTURES[cfg.architecture][1])
    if ok:
        print(f"  strict load OK: {len(model.state_dict())} tensors, no missing / unexpected keys")
    return cfg, model, ok


# ================================================================================================
# commands: check, forward, verify-shared
# ================================================================================================

def cmd_check(args):
    torch.set_num_threads(1)
    _, model, ok = open_model(args.dir, args.weights, args.add_pooling_layer)
    if not ok:
        print("check: FAILED (weights do not match the Hugging Face layout)")
        return 1
    inputs, meta = read_safetensors(args.inputs)
    out = run_variants(model, inputs, meta)
    print(f"ran variants {variants_of(inputs, meta)}: {len(out)} output tensors")
    if args.outputs:
        expected, _ = read_safetensors(args.outputs)
        good, worst = compare(out, expected, args.atol, args.atol)
        print(f"check: {'OK' if good else 'FAILED'} (atol = rtol = {args.atol:g}, worst max|diff| = {worst:.3e})")
        return 0 if good else 1
    print("check: OK (weights load strictly; no --outputs to compare)")
    return 0


def cmd_forward(args):
    torch.set_num_threads(1)
    _, model, ok = open_model(args.dir, args.weights, args.add_pooling_layer)
    if not ok:
        return 1
    inputs, meta = read_safetensors(args.inputs)
    variants = variants_of(inputs, meta)
    out = run_variants(model, inputs, meta)
    write_safetensors(args.output, out, {"format": "pt", "variants": ",".join(variants)})
    print(f"wrote {args.output}: {len(out)} tensors, variants {','.join(variants)}")
    return 0


def find_shared(given=None):
    if given:
        return given
    for p in SHARED_CANDIDATES:
        if os.path.isdir(p):
            return p
    raise FileNotFoundError("shared HF fixtures not found in " + ", ".join(SHARED_CANDIDATES))


def cmd_verify_shared(args):
    torch.set_num_threads(1)
    root = find_shared(args.root)
    all_ok, overall = True, 0.0
    for name in ("data2vec_vision_shared", "data2vec_audio", "data2vec_text"):
        folder = os.path.join(root, name)
        print(f"=== {folder}")
        cfg = load_config(folder)
        inputs, meta = read_safetensors(os.path.join(folder, "inputs.safetensors"))
        expected, _ = read_safetensors(os.path.join(folder, "outputs.safetensors"))
        loaded = {}
        for wname in ("model.safetensors", "pytorch_model.bin"):
            wpath = os.path.join(folder, wname)
            state = load_weights_file(wpath)
            loaded[wname] = state
            model, note = build_model(cfg, "auto", list(state.keys()))
            print(f"--- {cfg.architecture}, {note or 'no pooler option'}, weights {wname}")
            res = strict_load(model, state)
            if not report_load(wpath, *res):
                all_ok = False
                continue
            print(f"  strict load OK ({len(model.state_dict())} tensors)")
            out = run_variants(model, inputs, meta)
            good, worst = compare(out, expected, 1e-5, 0.0)
            missing_out = [k for k in expected if k not in out]
            if missing_out:
                good = False
            overall = max(overall, worst)
            all_ok = all_ok and good and worst <= 1e-5
            print(f"  worst max|diff| = {worst:.3e} ({'OK' if good else 'FAIL'}, limit 1e-5)")
            if wname == "model.safetensors":
                # Rounding cross-check: the same transcription in float64. The fixture README reports the distance
                # of its fp32 outputs to an independent fp64 NumPy forward; the same number here means that the
                # remaining fp32 differences are rounding (BLAS kernels / CPU), not semantics.
                out64 = run_variants(model.double(), inputs, meta, dtype=torch.float64)
                d_fix = max((expected[k].double() - out64[k]).abs().max().item() for k in expected)
                d_me = max((out[k].double() - out64[k]).abs().max().item() for k in expected)
                print(f"  fp64 run of this transcription: max|fixture - fp64| = {d_fix:.3e}, "
                      f"max|this fp32 - fp64| = {d_me:.3e}")
        a, b = loaded["model.safetensors"], loaded["pytorch_model.bin"]
        same = list(a) and set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)
        print(f"  model.safetensors == pytorch_model.bin bitwise: {bool(same)}")
        all_ok = all_ok and bool(same)
    print(f"verify-shared: {'OK' if all_ok else 'FAILED'} (worst max|diff| over all tensors {overall:.3e})")
    return 0 if all_ok else 1


# ================================================================================================
# make-fixtures
# ================================================================================================

def random_init(model, seed):
    """Every parameter random, none trivially 0/1 (the shared fixtures' scheme): Linear/Conv/Embedding weights
    N(0, 0.02); all biases (incl. LayerNorm beta) N(0, 0.1); LayerNorm gamma U(0.5, 1.5); lambda_1/lambda_2
    U(0.1, 0.5); relative_position_bias_table N(0, 0.5); cls_token/mask_token N(0, 0.3); vision absolute
    position_embeddings N(0, 0.1); audio masked_spec_embed U(0, 1). Rows at padding_idx are not zeroed.
    Exception (these fixtures only): the weights of the output heads (classifier*, lm_head, text pooler.dense) are
    N(0, 0.2), so that their inputs reach the non-linear range of tanh and the logits are O(1); with 0.02 a port
    that forgot the tanh of the text classification head would still agree to ~3e-4."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for mname, mod in model.named_modules():
            head = mname.split(".")[0] in ("classifier", "lm_head") or mname.endswith("pooler.dense")
            for pname, p in mod._parameters.items():
                if p is None:
                    continue
                if isinstance(mod, nn.LayerNorm):
                    if pname == "weight":
                        p.uniform_(0.5, 1.5, generator=g)
                    else:
                        p.normal_(0.0, 0.1, generator=g)
                elif isinstance(mod, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Embedding)):
                    p.normal_(0.0, (0.2 if head else 0.02) if pname == "weight" else 0.1, generator=g)
                elif pname == "relative_position_bias_table":
                    p.normal_(0.0, 0.5, generator=g)
                elif pname in ("cls_token", "mask_token"):
                    p.normal_(0.0, 0.3, generator=g)
                elif pname == "position_embeddings":
                    p.normal_(0.0, 0.1, generator=g)
                elif pname in ("lambda_1", "lambda_2"):
                    p.uniform_(0.1, 0.5, generator=g)
                elif pname == "masked_spec_embed":
                    p.uniform_(0.0, 1.0, generator=g)
                else:
                    raise RuntimeError(f"no init rule for {mname}.{pname}")


def vision_config(**kw):
    d = dict(VISION_DEFAULTS)
    d.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64, image_size=32,
             patch_size=8, num_channels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    d.update(kw)
    d.update(model_type="data2vec-vision", torch_dtype="float32")
    return d


def audio_config(**kw):
    d = dict(AUDIO_DEFAULTS)
    d.update(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    d.update(kw)
    d["num_feat_extract_layers"] = len(d["conv_dim"])
    d["output_hidden_size"] = d["output_hidden_size"] or d["hidden_size"]
    d.update(model_type="data2vec-audio", torch_dtype="float32")
    return d


def text_config(**kw):
    d = dict(TEXT_DEFAULTS)
    d.update(vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
             max_position_embeddings=20, layer_norm_eps=1e-5)
    d.update(kw)
    # is_decoder / add_cross_attention are PretrainedConfig base attributes: written only where set
    if not d["is_decoder"]:
        del d["is_decoder"]
    if not d["add_cross_attention"]:
        del d["add_cross_attention"]
    d.update(model_type="data2vec-text", torch_dtype="float32")
    return d


def labels(names):
    return {"id2label": {str(i): n for i, n in enumerate(names)}, "label2id": {n: i for i, n in enumerate(names)}}


def vision_inputs(cfg_d, seed, masked):
    g = torch.Generator().manual_seed(seed)
    img = pair(cfg_d["image_size"])
    patch = pair(cfg_d["patch_size"])
    n = (img[0] // patch[0]) * (img[1] // patch[1])
    pix = torch.randn(2, cfg_d["num_channels"], img[0], img[1], generator=g)
    res = collections.OrderedDict()
    res["plain.pixel_values"] = pix
    if masked:
        m = torch.rand(2, n, generator=g) < 0.4
        m[0, 0], m[1, 1] = True, False  # at least one masked / unmasked patch
        res["masked.pixel_values"] = pix.clone()
        res["masked.bool_masked_pos"] = m
    return res


def audio_inputs(seed, length, pad_length):
    g = torch.Generator().manual_seed(seed)
    res = collections.OrderedDict()
    x = torch.randn(2, length, generator=g)
    x[1, pad_length:] = 0.0
    am = torch.ones(2, length, dtype=torch.int64)
    am[1, pad_length:] = 0
    res["pad.input_values"] = x
    res["pad.attention_mask"] = am
    res["nopad.input_values"] = torch.randn(2, length, generator=g)
    return res


def text_ids(g, vocab, pad, n, real):
    # ids drawn from [3, vocab) (never pad/bos/eos by accident), <s> first, </s> last real token, then pads
    ids = torch.randint(3, vocab, (n,), generator=g)
    ids[0] = 0
    ids[real - 1] = 2
    ids[real:] = pad
    return ids


def text_inputs(cfg_d, seed, with_types, with_nomask):
    g = torch.Generator().manual_seed(seed)
    n, v, pad = 10, cfg_d["vocab_size"], cfg_d["pad_token_id"]
    res = collections.OrderedDict()
    ids = torch.stack([text_ids(g, v, pad, n, n), text_ids(g, v, pad, n, 7)])
    am = (ids != pad).to(torch.int64)
    if with_types:
        tt = torch.zeros(2, n, dtype=torch.int64)
        tt[0, 5:] = 1
        tt[1, 3:7] = 1
        res["types.input_ids"] = ids
        res["types.attention_mask"] = am
        res["types.token_type_ids"] = tt
        ids2 = torch.stack([text_ids(g, v, pad, n, 8), text_ids(g, v, pad, n, 5)])
        res["pad.input_ids"] = ids2
        res["pad.attention_mask"] = (ids2 != pad).to(torch.int64)
    else:
        res["pad.input_ids"] = ids
        res["pad.attention_mask"] = am
    if with_nomask:
        res["nomask.input_ids"] = torch.stack([text_ids(g, v, pad, n, n), text_ids(g, v, pad, n, n)])
    return res


# Each spec: folder -> dict(config, add_pooling_layer (bare models), inputs (callable), variants,
# description lines for the README, extra files)
def fixture_specs():
    specs = collections.OrderedDict()

    cfg = vision_config(use_relative_position_bias=True, use_shared_relative_position_bias=False,
                        use_absolute_position_embeddings=True, layer_scale_init_value=0.0, use_mean_pooling=True,
                        use_mask_token=False, layer_norm_eps=1e-6, architectures=["Data2VecVisionModel"])
    specs["vision_perlayer_abs_meanpool"] = dict(
        config=cfg, pool=True, seed=101, variants=["plain"], inputs=lambda c: vision_inputs(c, 1101, False),
        about=[
            "`Data2VecVisionModel(config, add_pooling_layer=True)`.",
            "- per-layer relative position bias only (`encoder.layer.{i}.attention.attention.relative_position_bias."
            "relative_position_bias_table` [(2*4-1)^2+3 = 52, 4]); no shared table.",
            "- absolute position embeddings `embeddings.position_embeddings` [1, 17, 32], added after the CLS concat.",
            "- layer_scale_init_value 0: no lambda_1 / lambda_2 (plain residuals).",
            "- use_mean_pooling true: `layernorm` is Identity (not in the state dict), so last_hidden_state == "
            "hidden_states.2; pooler_output = pooler.layernorm(mean of the 16 patch tokens).",
            "- use_mask_token false: no embeddings.mask_token. layer_norm_eps 1e-6.",
            "- add_pooling_layer is a constructor argument, not a config attribute: HF's default for "
            "Data2VecVisionModel is False; the pooler.* keys in model.safetensors say it is on here.",
        ])

    cfg = vision_config(image_size=40, use_relative_position_bias=True, use_shared_relative_position_bias=True,
                        use_absolute_position_embeddings=False, layer_scale_init_value=0.1, use_mean_pooling=False,
                        use_mask_token=True, architectures=["Data2VecVisionModel"])
    specs["vision_both_biases"] = dict(
        config=cfg, pool=False, seed=102, variants=["plain", "masked"],
        inputs=lambda c: vision_inputs(c, 1102, True),
        about=[
            "`Data2VecVisionModel(config, add_pooling_layer=False)` (HF default).",
            "- shared AND per-layer relative position bias at once: scores / sqrt(d) + per-layer bias + shared bias "
            "(both tables [(2*5-1)^2+3 = 84, 4]).",
            "- image 40, patch 8: a 5x5 patch grid (26 tokens with CLS).",
            "- layer scale 0.1 (lambda_1 / lambda_2 present), mask token, use_mean_pooling false: "
            "last_hidden_state = layernorm(hidden_states.2) (eps 1e-12); no pooler.",
            "- variants: `plain`; `masked` (bool_masked_pos [2, 25] BOOL: masked patch embeddings replaced by "
            "mask_token before the CLS concat).",
        ])

    cfg = vision_config(use_relative_position_bias=True, use_shared_relative_position_bias=False,
                        use_absolute_position_embeddings=False, layer_scale_init_value=0.1, use_mean_pooling=True,
                        use_mask_token=False, architectures=["Data2VecVisionForImageClassification"],
                        **labels(["cat", "dog", "bird", "fish", "frog"]))
    specs["vision_classifier"] = dict(
        config=cfg, pool=None, seed=103, variants=["plain"], inputs=lambda c: vision_inputs(c, 1103, False),
        about=[
            "`Data2VecVisionForImageClassification`: base under `data2vec_vision.` built with add_pooling_layer=True, "
            "`classifier` Linear(32, 5) on the pooled output.",
            "- per-layer relative bias, layer scale 0.1, use_mean_pooling true (pooler.layernorm on the mean of the "
            "patch tokens), no mask token; 5 labels (id2label / label2id in config.json).",
            "- outputs: hidden_states.*, last_hidden_state, pooler_output (of the base) and `logits` [2, 5].",
        ])

    cfg = audio_config(conv_bias=True, conv_dim=[16, 24, 32], conv_kernel=[10, 3, 3], conv_stride=[5, 2, 2],
                       num_conv_pos_embeddings=2, conv_pos_kernel_size=4, num_conv_pos_embedding_groups=4,
                       architectures=["Data2VecAudioModel"])
    specs["audio_even_bias"] = dict(
        config=cfg, pool=None, seed=104, variants=["pad", "nopad"], inputs=lambda c: audio_inputs(1104, 400, 300),
        about=[
            "`Data2VecAudioModel`.",
            "- conv feature encoder with conv_bias true: conv_dim (16, 24, 32), kernels (10, 3, 3), strides (5, 2, 2); "
            "each conv -> LayerNorm over channels (eps 1e-5, affine) -> GELU. 400 samples -> 79 -> 39 -> 19 frames.",
            "- feature projection LayerNorm(32) + Linear(32, 32); extract_features = the LayerNorm output.",
            "- positional conv: 2 layers of Conv1d(32, 32, k=4 (EVEN), padding=2, groups=4) -> drop the LAST frame -> "
            "LayerNorm without affine params -> GELU.",
            "- mask_time_prob 0.05 > 0: masked_spec_embed [32] in the state dict (unused in eval).",
            "- variants: `pad` (row 1 zero after sample 300, attention_mask [2, 400] int64 with 300 ones -> 14 of 19 "
            "frames; padded frames zeroed before the positional conv, finfo.min on padded keys) and `nopad` "
            "(different random input_values, no attention_mask).",
        ])

    cfg = audio_config(conv_bias=False, conv_dim=[16, 24, 24], conv_kernel=[10, 3, 2], conv_stride=[5, 2, 2],
                       num_conv_pos_embeddings=1, conv_pos_kernel_size=5, num_conv_pos_embedding_groups=2,
                       mask_time_prob=0.0, mask_feature_prob=0.0, vocab_size=12, pad_token_id=0,
                       architectures=["Data2VecAudioForCTC"])
    specs["audio_ctc"] = dict(
        config=cfg, pool=None, seed=105, variants=["pad", "nopad"], inputs=lambda c: audio_inputs(1105, 400, 280),
        extra={"vocab.json": ctc_vocab()},
        about=[
            "`Data2VecAudioForCTC`: base under `data2vec_audio.`, `lm_head` Linear(32, vocab_size 12); "
            "logits = lm_head(last_hidden_state) [2, 19, 12]. vocab.json: wav2vec2 CTC style, pad_token_id 0 "
            "(<pad> is the CTC blank).",
            "- conv_bias false, conv_dim (16, 24, 24), kernels (10, 3, 2), strides (5, 2, 2): 400 -> 79 -> 39 -> 19 "
            "frames; feature projection LayerNorm(24) + Linear(24, 32).",
            "- positional conv: 1 layer, Conv1d(32, 32, k=5 (odd), padding=2, groups=2), nothing dropped.",
            "- mask_time_prob = mask_feature_prob = 0: NO masked_spec_embed in the state dict.",
            "- variants: `pad` (row 1: 280 real samples -> 13 of 19 frames) and `nopad`.",
            "- outputs: hidden_states.*, last_hidden_state, extract_features [2, 19, 24] and logits.",
        ])

    cfg = text_config(type_vocab_size=2, architectures=["Data2VecTextModel"])
    specs["text_token_types"] = dict(
        config=cfg, pool=True, seed=106, variants=["types", "pad"], inputs=lambda c: text_inputs(c, 1106, True, False),
        about=[
            "`Data2VecTextModel(config, add_pooling_layer=True)` (HF default).",
            "- type_vocab_size 2: `embeddings.token_type_embeddings` [2, 32].",
            "- RoBERTa positions: real tokens get pad+1, pad+2, ...; pads get pad_token_id (1). "
            "max_position_embeddings 20.",
            "- variants: `types` (input_ids [2, 10], attention_mask, token_type_ids with mixed 0/1; row 1 = 7 tokens "
            "+ 3 pads) and `pad` (input_ids + attention_mask, no token_type_ids -> all 0).",
            "- pooler_output = tanh(pooler.dense(last_hidden_state[:, 0])).",
        ])

    cfg = text_config(type_vocab_size=1, architectures=["Data2VecTextForSequenceClassification"],
                      **labels(["negative", "neutral", "positive"]))
    specs["text_classifier"] = dict(
        config=cfg, pool=None, seed=107, variants=["pad"], inputs=lambda c: text_inputs(c, 1107, False, False),
        about=[
            "`Data2VecTextForSequenceClassification`: base under `data2vec_text.` with add_pooling_layer=False (no "
            "pooler keys), head `classifier.dense` -> tanh -> `classifier.out_proj` on the first token; 3 labels "
            "(id2label / label2id in config.json).",
            "- variant `pad`: input_ids [2, 10] (row 1 = 7 tokens + 3 pads), attention_mask.",
            "- outputs: hidden_states.*, last_hidden_state and `logits` [2, 3]; no pooler_output.",
        ])
    return specs


def ctc_vocab():
    vocab = collections.OrderedDict([("<pad>", 0), ("<s>", 1), ("</s>", 2), ("<unk>", 3), ("|", 4)])
    for i, ch in enumerate("ABCDEFG"):
        vocab[ch] = 5 + i
    # Wav2Vec2CTCTokenizer.save_vocabulary: json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    return json.dumps(vocab, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def describe(tensors):
    return [f"  - `{k}` {str(t.dtype).replace('torch.', '')} {list(t.shape)}" for k, t in sorted(tensors.items())]


def write_readme(folder, name, spec, cfg, model, inputs, outputs, sizes):
    lines = [f"# {name}: Hugging Face option fixture", "",
             "Generated by `scripts/hf_reference.py make-fixtures`, do not edit (regenerate instead).", "",
             f"Model: {spec['about'][0]} Eval mode, fp32, output_hidden_states semantics. "
             f"State dict: {len(model.state_dict())} tensors.", ""]
    lines += spec["about"][1:]
    lines += ["",
              "Format: as /work/shared/fixtures/hf (see its README): `config.json` (HF style, json.dumps(indent=2, "
              "sort_keys=True)), `model.safetensors` (HF key names, the model's state_dict, reference Rust layout), "
              "`inputs.safetensors` / `outputs.safetensors` with keys `<variant>.<name>` and __metadata__.variants. "
              "For each variant feed every `<variant>.*` input as the keyword argument of that name; "
              "`hidden_states.<i>`: i=0 the encoder input, i=L the last layer's output before any final layernorm.",
              "",
              "Weights: seeded torch.Generator, every parameter random (Linear/Conv/Embedding weights N(0, 0.02), "
              "biases and LayerNorm beta N(0, 0.1), LayerNorm gamma U(0.5, 1.5), lambda U(0.1, 0.5), relative tables "
              "N(0, 0.5), cls/mask token N(0, 0.3), vision position_embeddings N(0, 0.1), masked_spec_embed U(0, 1)); "
              "the weights of the output heads (classifier*, lm_head, text pooler.dense) are N(0, 0.2) so that "
              "tanh / head bugs show in the logits.",
              "",
              "Tolerance: a correct port matches every output with atol = rtol = 1e-4 (expect ~1e-5). Check a folder "
              "with `/usr/bin/python3 scripts/hf_reference.py check DIR --inputs IN --outputs OUT`.",
              "", "Inputs (`inputs.safetensors`):"]
    lines += describe(inputs)
    lines += ["", "Outputs (`outputs.safetensors`):"]
    lines += describe(outputs)
    lines += ["", "Sizes:"]
    lines += [f"  - `{k}`: {v} bytes" for k, v in sizes]
    lines.append("")
    with open(os.path.join(folder, "README.md"), "w") as f:
        f.write("\n".join(lines))


def cmd_make_fixtures(args):
    torch.set_num_threads(1)
    out_root = args.out_dir
    os.makedirs(out_root, exist_ok=True)
    ok_all = True
    for name, spec in fixture_specs().items():
        folder = os.path.join(out_root, name)
        os.makedirs(folder, exist_ok=True)
        cfg_d = spec["config"]
        cfg = Config(cfg_d)
        model, _ = build_model(cfg, spec["pool"] if spec["pool"] is not None else "auto")
        random_init(model, spec["seed"])
        inputs = spec["inputs"](cfg_d)
        meta = {"format": "pt", "variants": ",".join(spec["variants"])}
        outputs = run_variants(model, inputs, meta)
        files = []
        with open(os.path.join(folder, "config.json"), "w") as f:
            f.write(json.dumps(cfg_d, indent=2, sort_keys=True) + "\n")
        files.append("config.json")
        write_safetensors(os.path.join(folder, "model.safetensors"), model.state_dict(), {"format": "pt"})
        files.append("model.safetensors")
        write_safetensors(os.path.join(folder, "inputs.safetensors"), inputs, meta)
        files.append("inputs.safetensors")
        write_safetensors(os.path.join(folder, "outputs.safetensors"), outputs, meta)
        files.append("outputs.safetensors")
        for fname, text in spec.get("extra", {}).items():
            with open(os.path.join(folder, fname), "w") as f:
                f.write(text)
            files.append(fname)
        sizes = [(fn, os.path.getsize(os.path.join(folder, fn))) for fn in files]
        write_readme(folder, name, spec, cfg, model, inputs, outputs, sizes)
        # self-check: a fresh model from the written files reproduces the outputs bit for bit
        cfg2 = load_config(folder)
        state = load_weights_file(os.path.join(folder, "model.safetensors"))
        model2, _ = build_model(cfg2, "auto", list(state.keys()))
        res = strict_load(model2, state)
        inputs2, meta2 = read_safetensors(os.path.join(folder, "inputs.safetensors"))
        exp2, _ = read_safetensors(os.path.join(folder, "outputs.safetensors"))
        loaded_ok = not any(res[1:])
        same = loaded_ok and all(torch.equal(a, exp2[k]) for k, a in run_variants(model2, inputs2, meta2).items()) \
            and set(exp2) == set(outputs)
        ok_all = ok_all and same
        total = sum(s for _, s in sizes) + os.path.getsize(os.path.join(folder, "README.md"))
        print(f"{folder}: {cfg.architecture}, {len(model.state_dict())} weights, {len(outputs)} outputs, "
              f"{total} bytes; reload bit-exact: {same}")
    print(f"make-fixtures: {'OK' if ok_all else 'FAILED'}")
    return 0 if ok_all else 1


# ================================================================================================

# ================================================================================================
# base-size models for bench/run.sh --hf: the same model in plain PyTorch, random weights
# ================================================================================================

# facebook/data2vec-vision-base(-ft1k)'s encoder (ViT-B/16 at 224, per-layer relative position
# bias, layer scale 0.1, mean pooling) and facebook/data2vec-audio-base's (conv 512 x 7, base).
BASE_MODELS = {
    "vision-base": lambda: vision_config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                         intermediate_size=3072, image_size=224, patch_size=16,
                                         use_relative_position_bias=True, use_mean_pooling=True,
                                         architectures=["Data2VecVisionModel"]),
    "audio-base": lambda: audio_config(hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                                       intermediate_size=3072, architectures=["Data2VecAudioModel"]),
}
AUDIO_BENCH_SECONDS = 10


def cmd_make_model(args):
    cfg_d = BASE_MODELS[args.model]()
    model, _ = build_model(Config(cfg_d), "false")
    random_init(model, args.seed)
    os.makedirs(args.out_dir, exist_ok=True)
    with open(os.path.join(args.out_dir, "config.json"), "w") as f:
        f.write(json.dumps(cfg_d, indent=2, sort_keys=True) + "\n")
    write_safetensors(os.path.join(args.out_dir, "model.safetensors"),
                      collections.OrderedDict(model.state_dict()), {"format": "pt"})
    print(f"{args.out_dir}: {args.model}, {sum(p.numel() for p in model.parameters())} parameters")
    return 0


def cmd_bench(args):
    """Times the folder's model on a synthetic batch, one JSON line as bench/data2vec_bench prints."""
    import resource
    import time
    torch.set_num_threads(args.threads if args.threads > 0 else os.cpu_count())
    torch.manual_seed(args.seed)
    cfg = load_config(args.dir)
    model, _ = build_model(cfg, "false")
    strict_load(model, load_weights_file(weights_path(args.dir)))
    if cfg.model_type == "data2vec-vision":
        side = cfg.image_size if isinstance(cfg.image_size, int) else cfg.image_size[0]
        kw = {"pixel_values": torch.randn(args.batch, cfg.num_channels, side, side)}
    elif cfg.model_type == "data2vec-audio":
        kw = {"input_values": torch.randn(args.batch, 16000 * AUDIO_BENCH_SECONDS)}
    else:
        raise NotImplementedError("bench: vision and audio models")
    times = []
    for i in range(args.warmup + args.reps):
        t0 = time.perf_counter()
        with torch.inference_mode():
            model(**kw)["last_hidden_state"].sum().item()
        if i >= args.warmup:
            times.append(time.perf_counter() - t0)
    times_sorted = sorted(times)
    n = len(times_sorted)
    med = times_sorted[n // 2] if n % 2 else 0.5 * (times_sorted[n // 2 - 1] + times_sorted[n // 2])
    print(json.dumps({"impl": "python", "config": args.config, "mode": "extract", "batch": args.batch,
                      "dtype": "fp32", "threads": torch.get_num_threads(), "torch": torch.__version__,
                      "params": sum(p.numel() for p in model.parameters()), "flops": args.flops * args.batch,
                      "times_s": times, "median_s": med, "samples_per_s": args.batch / med,
                      "gflops": args.flops * args.batch / med / 1e9,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}),
          flush=True)
    return 0


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("verify-shared", help="reproduce the shared HF fixtures (both weight files)")
    p.add_argument("root", nargs="?", default=None, help="folder with data2vec_{vision_shared,audio,text}")
    p = sub.add_parser("make-fixtures", help="write the option fixtures")
    p.add_argument("out_dir", nargs="?", default=os.path.join(REPO_ROOT, DEFAULT_FIXTURE_OUT))
    for name in ("check", "forward"):
        p = sub.add_parser(name)
        p.add_argument("dir")
        p.add_argument("--inputs", required=True)
        p.add_argument("--weights", default=None, help="default DIR/model.safetensors, else DIR/pytorch_model.bin")
        p.add_argument("--add-pooling-layer", default="auto", choices=["auto", "true", "false"],
                       help="bare vision/text models only (HF constructor argument); auto: pooler.* keys present "
                            "or HF default (text True, vision False)")
        if name == "check":
            p.add_argument("--outputs", default=None)
            p.add_argument("--atol", type=float, default=1e-4, help="atol = rtol (default 1e-4)")
        else:
            p.add_argument("--output", required=True)
    p = sub.add_parser("make-model", help="write a base-size folder with random weights (bench/run.sh --hf)")
    p.add_argument("model", choices=sorted(BASE_MODELS))
    p.add_argument("out_dir")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("bench", help="time the folder's model on a synthetic batch (bench/run.sh --hf)")
    p.add_argument("dir")
    p.add_argument("--config", required=True, help="the row's name in the bench table")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--flops", type=float, default=0.0, help="forward FLOPs per example (the C++ row's)")
    args = ap.parse_args(argv)
    try:
        return {"verify-shared": cmd_verify_shared, "make-fixtures": cmd_make_fixtures, "check": cmd_check,
                "forward": cmd_forward, "make-model": cmd_make_model, "bench": cmd_bench}[args.cmd](args)
    except (NotImplementedError, ValueError, FileNotFoundError) as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
