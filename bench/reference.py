#!/usr/bin/python3
"""The Python reference of bench/data2vec_bench.cpp: the same data2vec step in plain PyTorch.

Run with /usr/bin/python3 (Debian's python3-torch: the same 1.13 kernels as libtorch-dev).
The models mirror src/data2vec/{vision,text,audio}/encoder.cpp, nn/transformer.cpp and
core/{data2vec,targets,loss,ema}.cpp op for op, under the same parameter names, so a state dict
written by `data2vec_bench --dump` loads here unchanged and both sides print equal parameter counts.

    python3 bench/reference.py --config vision-tiny --mode train --batch 16 --threads 2 --reps 3
    python3 bench/reference.py --check parity.safetensors   # replay a C++ dump, print its losses
    python3 bench/reference.py --yaml configs/vision/fmnist-tiny-v2.yaml --batch 32 --reps 1
        # the model a training config builds (data2vec_bench --yaml): data2vec 2.0 vision

Prints one JSON line per run, the same fields as the C++ bench.
"""
import argparse
import json
import math
import os
import random
import resource
import struct
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

TEXT_TOKENS = 128  # kTextTokens in data2vec_bench.cpp (--tokens)
TEXT_VOCAB = 8000
AUDIO_SAMPLES = 32000  # 2 s at 16 kHz (--seconds)

VISION = {"tiny": (12, 192, 768, 3), "small": (12, 384, 1536, 6), "base": (12, 768, 3072, 12),
          "fmnist-tiny": (6, 192, 768, 3), "fmnist-mini": (4, 128, 512, 4)}
# image size, patch size, channels of a vision preset (vision/encoder.cpp presets()); 224, 16, 3
# for the rest
VISION_IMAGES = {"fmnist-tiny": (28, 4, 1), "fmnist-mini": (28, 4, 1)}
TEXT = {"tiny": (12, 192, 768, 3), "small": (12, 384, 1536, 6), "base": (12, 768, 3072, 12)}
AUDIO = {"tiny": (12, 192, 768, 3, 256), "small": (12, 384, 1536, 6, 512),
         "base": (12, 768, 3072, 12, 512)}


# ---- shared blocks (nn/transformer.cpp) ----

class SelfAttention(nn.Module):
    def __init__(self, dim, heads, key_bias=True, attention_dropout=0.0):
        super().__init__()
        self.heads = heads
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim, bias=key_bias)
        self.value = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)
        self.attention_dropout = attention_dropout

    def forward(self, x, bias, key_padding_mask):
        b, t, d = x.shape
        h = self.heads
        dh = d // h
        q = self.query(x).view(b, t, h, dh).transpose(1, 2)
        k = self.key(x).view(b, t, h, dh).transpose(1, 2)
        v = self.value(x).view(b, t, h, dh).transpose(1, 2)
        logit_bias = bias
        if key_padding_mask is not None:
            lowest = torch.finfo(q.dtype).min
            pad = torch.zeros(b, 1, 1, t, dtype=q.dtype).masked_fill(
                key_padding_mask.view(b, 1, 1, t), lowest)
            logit_bias = logit_bias.to(q.dtype) + pad if logit_bias is not None else pad
        logits = torch.matmul(q, k.transpose(-2, -1)) * (1.0 / math.sqrt(dh))
        if logit_bias is not None:
            logits = logits + logit_bias.to(logits.dtype)
        probs = torch.softmax(logits, -1)
        probs = F.dropout(probs, self.attention_dropout, self.training)
        context = torch.matmul(probs, v)
        return self.output(context.transpose(1, 2).reshape(b, t, h * dh))


class FeedForward(nn.Module):
    def __init__(self, dim, hidden, activation_dropout=0.0):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.activation_dropout = nn.Dropout(activation_dropout)

    def forward(self, x):
        return self.fc2(self.activation_dropout(F.gelu(self.fc1(x))))


class PreNormBlock(nn.Module):
    def __init__(self, dim, heads, mlp, eps, layer_scale, key_bias, dropout=0.0):
        super().__init__()
        self.layernorm_before = nn.LayerNorm(dim, eps=eps)
        self.attention = SelfAttention(dim, heads, key_bias)
        self.layernorm_after = nn.LayerNorm(dim, eps=eps)
        self.feed_forward = FeedForward(dim, mlp)
        self.dropout = nn.Dropout(dropout)
        self.lambda_1 = nn.Parameter(torch.full((dim,), layer_scale))
        self.lambda_2 = nn.Parameter(torch.full((dim,), layer_scale))

    def forward(self, x, bias, key_padding_mask):
        attn = self.attention(self.layernorm_before(x), bias, key_padding_mask) * self.lambda_1
        h = x + self.dropout(attn)
        ffn = self.feed_forward(self.layernorm_after(h))
        return h + self.dropout(ffn * self.lambda_2), ffn


class PostNormBlock(nn.Module):
    def __init__(self, dim, heads, mlp, eps, dropout, attention_dropout, activation_dropout=0.0):
        super().__init__()
        self.attention = SelfAttention(dim, heads, True, attention_dropout)
        self.layer_norm = nn.LayerNorm(dim, eps=eps)
        self.feed_forward = FeedForward(dim, mlp, activation_dropout)
        self.final_layer_norm = nn.LayerNorm(dim, eps=eps)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x, bias, key_padding_mask):
        h = self.layer_norm(x + self.dropout(self.attention(x, bias, key_padding_mask)))
        ffn = self.feed_forward(h)
        return self.final_layer_norm(h + self.dropout(ffn)), ffn


def trunc_normal_(t, std):
    nn.init.trunc_normal_(t, std=std, a=-2 * std, b=2 * std)


# ---- vision (vision/encoder.cpp) ----

def relative_position_index(g):
    n = g * g
    num = (2 * g - 1) ** 2 + 3
    index = torch.empty(n + 1, n + 1, dtype=torch.long)
    coords = torch.arange(n)
    dh = (coords // g).view(-1, 1) - (coords // g).view(1, -1) + g - 1
    dw = (coords % g).view(-1, 1) - (coords % g).view(1, -1) + g - 1
    index[1:, 1:] = dh * (2 * g - 1) + dw
    index[0, :] = num - 3
    index[:, 0] = num - 2
    index[0, 0] = num - 1
    return index


class PatchEmbeddings(nn.Module):
    def __init__(self, c, d, p):
        super().__init__()
        self.projection = nn.Conv2d(c, d, p, stride=p)

    def forward(self, pixels):
        return self.projection(pixels).flatten(2).transpose(1, 2)


class VisionEmbeddings(nn.Module):
    def __init__(self, d, c=3, p=16):
        super().__init__()
        self.cls_token = nn.Parameter(torch.zeros(1, 1, d))
        self.mask_token = nn.Parameter(torch.zeros(1, 1, d))
        self.patch_embeddings = PatchEmbeddings(c, d, p)


class RelativePositionBias(nn.Module):
    def __init__(self, g, heads):
        super().__init__()
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * g - 1) ** 2 + 3, heads))
        self.register_buffer("relative_position_index", relative_position_index(g))

    def forward(self):
        t = self.relative_position_index.size(0)
        return self.relative_position_bias_table.index_select(
            0, self.relative_position_index.view(-1)).view(t, t, -1).permute(2, 0, 1).contiguous()

    def forward_kept(self, ids_keep):
        r, k = ids_keep.shape
        index = self.relative_position_index[ids_keep.unsqueeze(2), ids_keep.unsqueeze(1)]
        return self.relative_position_bias_table.index_select(0, index.reshape(-1)).view(
            r, k, k, -1).permute(0, 3, 1, 2).contiguous()  # [R,H,Tk,Tk]


class VisionTransformer(nn.Module):
    def __init__(self, depth, d, mlp, heads, g):
        super().__init__()
        self.relative_position_bias = RelativePositionBias(g, heads)
        self.layer = nn.ModuleList(
            PreNormBlock(d, heads, mlp, 1e-6, 0.1, key_bias=False) for _ in range(depth))


class VisionEncoder(nn.Module):
    prefix_tokens = 1
    copied = ()

    def __init__(self, size, layer_result="block"):
        super().__init__()
        depth, d, mlp, heads = VISION[size]
        image, patch, channels = VISION_IMAGES.get(size, (224, 16, 3))
        self.g = image // patch
        self.layer_result = layer_result  # block: the block output; ffn: its FFN output (2.0)
        self.embeddings = VisionEmbeddings(d, channels, patch)
        self.encoder = VisionTransformer(depth, d, mlp, heads, self.g)
        self.layernorm = nn.LayerNorm(d, eps=1e-6)
        for m in self.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                trunc_normal_(m.weight, 0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
        trunc_normal_(self.embeddings.cls_token, 0.02)
        trunc_normal_(self.embeddings.mask_token, 0.02)
        with torch.no_grad():
            for i, layer in enumerate(self.encoder.layer):
                layer.attention.output.weight.mul_(1 / math.sqrt(2 * (i + 1)))
                layer.feed_forward.fc2.weight.mul_(1 / math.sqrt(2 * (i + 1)))

    def apply_mask(self, source, padding_mask):
        # Same count as BEiT block masking (round(0.6 N) per image), random positions: only the
        # count matters for the cost of a data2vec 1.0 step.
        b, n = source.size(0), self.g * self.g
        count = round(0.6 * n)
        order = torch.rand(b, n).argsort(1)
        patch_mask = torch.zeros(b, n, dtype=torch.bool)
        patch_mask.scatter_(1, order[:, :count], True)
        mask = torch.cat([torch.zeros(b, 1, dtype=torch.bool), patch_mask], 1)
        return source, mask

    def extract_features(self, pixels, padding_mask, mask):
        emb = self.embeddings
        patches = emb.patch_embeddings(pixels).to(emb.cls_token.dtype)
        b = patches.size(0)
        cls = emb.cls_token.expand(b, 1, -1)
        local = torch.cat([cls, patches], 1)
        if mask is None:
            tokens = local
        else:
            tokens = torch.cat([cls, torch.where(mask[:, 1:].unsqueeze(-1), emb.mask_token,
                                                 patches)], 1)
        bias = self.encoder.relative_position_bias()
        x = tokens
        results = []
        for layer in self.encoder.layer:
            x, ffn = layer(x, bias, None)
            results.append(ffn if self.layer_result == "ffn" else x)
        return self.layernorm(x), results, None, local

    def extract_kept_features(self, pixels, ids_keep, clones):
        """data2vec 2.0's student (vision/encoder.cpp extract_kept_features): the patch embedding
        once per image, then the kept positions (CLS included) of each of its `clones` copies;
        the relative bias gathered for the kept pairs. ids_keep [B*M,Tk] -> x [B*M,Tk,D]."""
        emb = self.embeddings
        patches = emb.patch_embeddings(pixels).to(emb.cls_token.dtype)
        b = patches.size(0)
        local = torch.cat([emb.cls_token.expand(b, 1, -1), patches], 1)  # [B,1+N,D], once
        example = torch.div(torch.arange(ids_keep.size(0)), clones,
                            rounding_mode="floor").unsqueeze(1)  # core/masking.cpp gather_copies
        x = local[example, ids_keep]  # [B*M,Tk,D]
        bias = self.encoder.relative_position_bias.forward_kept(ids_keep)  # [B*M,H,Tk,Tk]
        results = []
        for layer in self.encoder.layer:
            x, ffn = layer(x, bias, None)
            results.append(ffn if self.layer_result == "ffn" else x)
        return self.layernorm(x), results, None, local

    def teacher_features(self, source, padding_mask, student_out):
        return self.extract_features(source, padding_mask, None)


# ---- text (text/encoder.cpp) ----

class TextEmbeddings(nn.Module):
    def __init__(self, vocab, d, positions=512):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, d, padding_idx=1)
        self.position_embeddings = nn.Embedding(positions, d)
        self.token_type_embeddings = nn.Embedding(1, d)
        self.LayerNorm = nn.LayerNorm(d, eps=1e-5)

    def forward(self, ids):
        positions = torch.arange(ids.size(1))
        x = (self.word_embeddings(ids) + self.position_embeddings(positions).unsqueeze(0) +
             self.token_type_embeddings.weight[0])
        return self.LayerNorm(x)


class TextLayers(nn.Module):
    def __init__(self, layers):
        super().__init__()
        self.layer = nn.ModuleList(layers)


class TextEncoder(nn.Module):
    prefix_tokens = 0
    copied = ("embeddings.",)

    def __init__(self, size, dropout=0.1):
        super().__init__()
        depth, d, mlp, heads = TEXT[size]
        self.embeddings = TextEmbeddings(TEXT_VOCAB, d, max(512, TEXT_TOKENS))
        self.embedding_dropout = nn.Dropout(dropout)
        self.encoder = TextLayers(
            [PostNormBlock(d, heads, mlp, 1e-5, dropout, dropout) for _ in range(depth)])
        with torch.no_grad():
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0, 0.02)
                    m.bias.zero_()
                elif isinstance(m, nn.Embedding):
                    m.weight.normal_(0, 0.02)
            self.embeddings.word_embeddings.weight[1].zero_()

    def apply_mask(self, ids, padding_mask):
        # BERT masking: 15% of the real non-special tokens; 80% <mask> (4), 10% random, 10% kept.
        special = ids < 5
        selected = (torch.rand(ids.shape) < 0.15) & ~special
        r = torch.rand(ids.shape)
        masked_ids = torch.where(selected & (r < 0.8), torch.full_like(ids, 4), ids)
        random_ids = torch.randint(5, TEXT_VOCAB, ids.shape)
        masked_ids = torch.where(selected & (r >= 0.8) & (r < 0.9), random_ids, masked_ids)
        return masked_ids, selected

    def extract_features(self, ids, padding_mask, mask):
        local = self.embeddings(ids)
        x = self.embedding_dropout(local)
        results = []
        for layer in self.encoder.layer:
            x, ffn = layer(x, None, padding_mask)
            results.append(ffn)
        return x, results, padding_mask, local

    def teacher_features(self, source, padding_mask, student_out):
        return self.extract_features(source, padding_mask, None)


# ---- audio (audio/encoder.cpp) ----

class ConvLayer(nn.Module):
    def __init__(self, cin, cout, k, s):
        super().__init__()
        self.conv = nn.Conv1d(cin, cout, k, stride=s, bias=False)
        nn.init.kaiming_normal_(self.conv.weight)
        self.layer_norm = nn.LayerNorm(cout, eps=1e-5)

    def forward(self, x):
        y = self.conv(x)
        y = self.layer_norm(y.transpose(1, 2)).transpose(1, 2)
        return F.gelu(y)


class FeatureExtractor(nn.Module):
    def __init__(self, c):
        super().__init__()
        specs = [(c, 10, 5)] + [(c, 3, 2)] * 4 + [(c, 2, 2)] * 2
        layers, cin = [], 1
        for cout, k, s in specs:
            layers.append(ConvLayer(cin, cout, k, s))
            cin = cout
        self.conv_layers = nn.ModuleList(layers)

    def forward(self, wave):
        x = wave.unsqueeze(1)
        for layer in self.conv_layers:
            x = layer(x)
        return x


class FeatureProjection(nn.Module):
    def __init__(self, c, d):
        super().__init__()
        self.layer_norm = nn.LayerNorm(c, eps=1e-5)
        self.projection = nn.Linear(c, d)

    def forward(self, x):
        return self.projection(self.layer_norm(x))


class PositionalConvLayer(nn.Module):
    def __init__(self, d, k=19, groups=16):
        super().__init__()
        self.conv = nn.Conv1d(d, d, k, padding=k // 2, groups=groups)
        self.remove = 1 if k % 2 == 0 else 0

    def forward(self, x):
        y = self.conv(x)
        if self.remove:
            y = y[:, :, :-self.remove]
        y = F.layer_norm(y.transpose(1, 2), (y.size(1),), None, None, 1e-5).transpose(1, 2)
        return F.gelu(y)


class PositionalConvEmbedding(nn.Module):
    def __init__(self, d):
        super().__init__()
        self.layers = nn.ModuleList(PositionalConvLayer(d) for _ in range(5))

    def forward(self, x):
        y = x.transpose(1, 2)
        for layer in self.layers:
            y = layer(y)
        return y.transpose(1, 2)


class AudioTransformer(nn.Module):
    def __init__(self, depth, d, mlp, heads, dropout):
        super().__init__()
        self.pos_conv_embed = PositionalConvEmbedding(d)
        self.layer_norm = nn.LayerNorm(d, eps=1e-5)
        self.dropout = nn.Dropout(dropout)
        self.layers = nn.ModuleList(
            PostNormBlock(d, heads, mlp, 1e-5, dropout, dropout) for _ in range(depth))
        with torch.no_grad():
            for m in self.layers.modules():
                if isinstance(m, nn.Linear):
                    m.weight.normal_(0, 0.02)
                    m.bias.zero_()

    def forward(self, x, padding_mask):
        if padding_mask is not None:
            x = x.masked_fill(padding_mask.unsqueeze(-1), 0.0)
        x = x + self.pos_conv_embed(x)
        x = self.dropout(self.layer_norm(x))
        results = []
        for layer in self.layers:
            x, ffn = layer(x, None, padding_mask)
            results.append(ffn)
        return x, results


class AudioEncoder(nn.Module):
    prefix_tokens = 0
    copied = ("feature_extractor.", "feature_projection.", "masked_spec_embed",
              "encoder.pos_conv_embed.")

    def __init__(self, size, dropout=0.1):
        super().__init__()
        depth, d, mlp, heads, c = AUDIO[size]
        self.feature_extractor = FeatureExtractor(c)
        self.feature_projection = FeatureProjection(c, d)
        self.feature_dropout = nn.Dropout(0.0)
        self.masked_spec_embed = nn.Parameter(torch.rand(d))
        self.encoder = AudioTransformer(depth, d, mlp, heads, dropout)

    def apply_mask(self, wave, padding_mask):
        # Spans of 10 frames, about 0.65 T / 10 starts per example (overlaps merge), as wav2vec.
        b = wave.size(0)
        t = self.frames(wave.size(1))
        spans = max(1, int(0.65 * t / 10 + torch.rand(1).item()))
        mask = torch.zeros(b, t, dtype=torch.bool)
        for i in range(b):
            for s in torch.randperm(t - 10)[:spans].tolist():
                mask[i, s:s + 10] = True
        return wave, mask

    @staticmethod
    def frames(samples):
        for k, s in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
            samples = (samples - k) // s + 1
        return samples

    def extract_features(self, wave, padding_mask, mask):
        features = self.feature_extractor(wave).transpose(1, 2)
        local = self.feature_projection(features)
        x = self.feature_dropout(local)
        if mask is not None:
            x = torch.where(mask.unsqueeze(-1), self.masked_spec_embed.to(x.dtype).view(1, 1, -1),
                            x)
        x, results = self.encoder(x, None)
        return x, results, None, local

    def teacher_features(self, source, padding_mask, student_out):
        local = student_out[3].detach()
        x, results = self.encoder(local, None)
        return x, results, None, local


# ---- data2vec (core/data2vec.cpp, targets.cpp, loss.cpp, ema.cpp) ----

def layer_norm_targets(x, eps):
    return F.layer_norm(x, (x.size(-1),), None, None, eps)


def instance_norm_targets(x, eps):
    mean = x.mean(1, keepdim=True)
    var = x.var(1, unbiased=False, keepdim=True)
    return (x - mean) * torch.rsqrt(var + eps)


NORMS = {"none": lambda x, eps: x, "layer": layer_norm_targets, "instance": instance_norm_targets}

# top_k, per-layer norm, final norm, loss beta, loss scale (<0: 1/sqrt(D)), head mult, EMA
# (start, end, anneal), AdamW (lr, betas, eps, weight decay, clip)
RECIPES = {
    "vision": dict(k=6, layer="layer", final="layer", beta=2.0, scale=1.0, head=0,
                   ema=(0.9998, 0.9999, 300000), optim=(2e-3, (0.9, 0.999), 1e-8, 0.05, 3.0)),
    "text": dict(k=10, layer="layer", final="none", beta=4.0, scale=1.0, head=2,
                 ema=(0.999, 0.9999, 100000), optim=(2e-4, (0.9, 0.98), 1e-6, 0.01, 5.0)),
    "audio": dict(k=8, layer="instance", final="none", beta=0.0, scale=-1.0, head=0,
                  ema=(0.999, 0.9999, 30000), optim=(5e-4, (0.9, 0.98), 1e-6, 0.01, 0.0)),
}


def mean_std_over_positions(y):
    y = y.detach().float()
    return torch.sqrt(y.var(0) + 1e-6).mean() if y.size(0) >= 2 else torch.zeros(())


class Data2Vec(nn.Module):
    def __init__(self, modality, size, dropout):
        super().__init__()
        self.recipe = RECIPES[modality]
        make = {"vision": lambda: VisionEncoder(size),
                "text": lambda: TextEncoder(size, dropout),
                "audio": lambda: AudioEncoder(size, dropout)}[modality]
        self.student = make()
        self.teacher = make()
        d = self.student.embeddings.cls_token.size(-1) if modality == "vision" else (
            self.student.embeddings.LayerNorm.weight.size(0) if modality == "text" else
            self.student.masked_spec_embed.size(0))
        m = self.recipe["head"]
        self.head = nn.Sequential(nn.Linear(d, d)) if m == 0 else nn.Sequential(
            nn.Linear(d, m * d), nn.GELU(), nn.Linear(m * d, d))
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def train(self, mode=True):
        super().train(mode)
        self.teacher.eval()
        return self

    def targets(self, results):
        r = self.recipe
        k = r["k"]
        total = None
        for layer in results[-k:]:
            y = NORMS[r["layer"]](layer.detach().float(), 1e-5)
            total = y if total is None else total + y
        return NORMS[r["final"]](total / k, 1e-5)

    def forward_masked(self, source, padding_mask, student_source, mask):
        s_out = self.student.extract_features(student_source, padding_mask, mask)
        with torch.no_grad():
            t_out = self.teacher.teacher_features(source, padding_mask, s_out)
            targets = self.targets(t_out[1])
        selected = mask.bool()
        if s_out[2] is not None:
            selected = selected & ~s_out[2]
        predictions = self.head(s_out[0][selected])
        targets = targets[selected]
        p, t = predictions.float(), targets.float()
        r = self.recipe
        per = (p - t).pow(2) if r["beta"] == 0 else F.smooth_l1_loss(p, t, reduction="none",
                                                                      beta=r["beta"])
        scale = r["scale"] if r["scale"] > 0 else 1 / math.sqrt(p.size(1))
        loss = per.sum() * scale / max(p.size(0), 1)
        real = (~s_out[2]).sum() if s_out[2] is not None else torch.tensor(selected.numel())
        stats = (mean_std_over_positions(targets), mean_std_over_positions(predictions),
                 selected.sum().double() / real.double().clamp_min(1))
        return loss, predictions, targets, stats

    @torch.no_grad()
    def ema_step(self, step):
        start, end, anneal = self.recipe["ema"]
        decay = end if step >= anneal else end - (end - start) * (1 - step / anneal)
        teacher = dict(self.teacher.named_parameters())
        copied = self.student.copied
        for name, s in self.student.named_parameters():
            t = teacher[name]
            if any(name.startswith(c) for c in copied):
                t.copy_(s)
            else:
                t.mul_(decay).add_(s.float(), alpha=1 - decay)
        teacher_buffers = dict(self.teacher.named_buffers())
        for name, b in self.student.named_buffers():
            teacher_buffers[name].copy_(b)


def make_optimizer(model):
    # optim.name adam is fairseq's Adam, decoupled decay: AdamW (train/optimizer.cpp).
    lr, betas, eps, wd, _ = model.recipe["optim"]
    decayed, exempt = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        no_decay = (p.dim() <= 1 or "token" in name or "position" in name or
                    "masked_spec_embed" in name)
        (exempt if no_decay else decayed).append(p)
    groups = [{"params": decayed, "weight_decay": wd}, {"params": exempt, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=eps)


# ---- data2vec 2.0 (--yaml; core/data2vec.cpp forward_v2, core/decoder.cpp) ----

def load_config(path):
    """A training config as io/config.cpp reads it: the `base` chain merged (the file's keys over
    its base's), then the keys the bench reads with the C++ defaults (io/config.h) for the unset
    ones; algorithm v2 gives unset target / loss / mask keys 2.0's (apply_algorithm_defaults)."""
    try:
        import yaml  # Debian's python3-yaml
    except ImportError:
        sys.exit("reference.py: --yaml needs PyYAML (apt-get install python3-yaml)")

    def read(file):
        with open(file) as f:
            tree = yaml.safe_load(f) or {}
        base = tree.pop("base", None)
        if base is None:
            return tree
        merged = read(os.path.join(os.path.dirname(file), base))
        for section, keys in tree.items():
            if isinstance(keys, dict):
                merged.setdefault(section, {}).update(keys)
            else:
                merged[section] = keys
        return merged

    tree = read(path)
    get = lambda section, key, default: (tree.get(section) or {}).get(key, default)
    v2 = get("model", "algorithm", "v1") == "v2"
    c = dict(
        modality=get("model", "modality", "vision"), preset=get("model", "preset", "tiny"),
        v2=v2, top_k=get("model", "top_k_layers", 6),
        layer_result=get("model", "layer_result", "ffn" if v2 else "block"),
        layer_norm=get("model", "target_layer_norm", "instance_norm" if v2 else "layer_norm"),
        final_norm=get("model", "target_final_norm", "layer_norm"),
        beta=float(get("model", "loss_beta", 0.0 if v2 else 2.0)),
        scale=float(get("model", "loss_scale", 0.0 if v2 else 1.0)),
        mask_ratio=float(get("model", "mask_ratio", 0.8 if v2 else 0.6)),
        clones=get("model", "clone_batch", 16),  # vision's default (app/builders.cpp)
        decoder=(get("model", "decoder_dim", 768), get("model", "decoder_kernel", 3),
                 get("model", "decoder_groups", 16), get("model", "decoder_layers", 6)),
        cls_loss=float(get("model", "cls_loss", 0.01)),
        ema=(float(get("ema", "decay_start", 0.9998)), float(get("ema", "decay_end", 0.9999)),
             get("ema", "anneal_steps", None)),
        optim=(float(get("optim", "lr", 1e-3)),
               (float(get("optim", "beta1", 0.9)), float(get("optim", "beta2", 0.999))),
               float(get("optim", "eps", 1e-8)), float(get("optim", "weight_decay", 0.05)),
               float(get("optim", "clip_grad_norm", 3.0))),
        image_size=get("data", "image_size", 28), seed=get("train", "seed", 1))
    if c["ema"][2] is None:  # unset: the whole run
        c["ema"] = c["ema"][:2] + (get("train", "max_steps", 1000),)
    # What this twin mirrors: a 2.0 vision model of a built-in preset with the default encoder
    # options (BEiT relative positions, depth-scaled init, no dropout, layer scale 0.1).
    unsupported = [
        k for k, ok in [
            ("model.modality (vision only)", c["modality"] == "vision"),
            ("model.algorithm (v2 only: the v1 rows are --config)", v2),
            ("model.preset", c["preset"] in VISION),
            ("data.image_size (the preset's)",
             c["image_size"] == VISION_IMAGES.get(c["preset"], (224,))[0]),
            ("model.position_encoding", get("model", "position_encoding", "relative") ==
             "relative"),
            ("model.depth_scaled_init", get("model", "depth_scaled_init", True) is True),
            ("model.dropout", get("model", "dropout", 0.0) in (0, 0.0)),
            ("model.layer_scale_init", get("model", "layer_scale_init", 0.1) == 0.1)] if not ok]
    if unsupported:
        sys.exit(f"reference.py: {path}: not mirrored here: {', '.join(unsupported)}")
    return c


def inverse_block_mask(rows, g, mask_ratio, rng, block_size=3):
    """vision/masking.cpp inverse_block_mask: each row keeps round((1 - ratio) N) patches, grown
    from block_size^2 blocks centred anywhere on the grid (clipped at the edges; the last block
    a random subset of its new patches). The same algorithm, drawn from Python's random (the
    C++ runs mt19937_64 seeded per row), so not the same masks. [R,1+N] bool, CLS column first
    (never masked), True = masked."""
    n = g * g
    target = min(max(round((1.0 - mask_ratio) * n), 1), n - 1)  # inverse_block_keep_count
    lo, hi = (block_size - 1) // 2, block_size // 2
    out = []
    for _ in range(rows):
        kept = [False] * n
        count = 0
        while count < target:
            ci, cj = rng.randint(0, g - 1), rng.randint(0, g - 1)
            fresh = [i * g + j for i in range(max(0, ci - lo), min(g - 1, ci + hi) + 1)
                     for j in range(max(0, cj - lo), min(g - 1, cj + hi) + 1)
                     if not kept[i * g + j]]
            take = min(len(fresh), target - count)
            for k in range(take):
                r = rng.randint(k, len(fresh) - 1)
                fresh[k], fresh[r] = fresh[r], fresh[k]
                kept[fresh[k]] = True
            count += take
        out.append([False] + [not k for k in kept])
    return torch.tensor(out, dtype=torch.bool)


class DecoderBlock(nn.Module):
    def __init__(self, cin, dim, kernel, groups):
        super().__init__()
        self.dim = dim
        self.conv = nn.Conv2d(cin, dim, kernel, padding=kernel // 2, groups=groups)

    def forward(self, x):
        y = self.conv(x).movedim(1, -1)  # channels last
        y = F.layer_norm(y, (self.dim,), None, None, 1e-5)
        return F.gelu(y).movedim(-1, 1)


class Decoder(nn.Module):
    """core/decoder.cpp: blocks of grouped Conv2d -> LayerNorm (no affine) -> GELU on the patch
    grid, residual where the widths match, then a Linear back to the encoder's width."""

    def __init__(self, input_dim, dim, kernel, groups, layers, grid):
        super().__init__()
        self.grid = grid
        self.blocks = nn.ModuleList(
            DecoderBlock(input_dim if i == 0 else dim, dim, kernel, groups) for i in range(layers))
        self.proj = nn.Linear(dim, input_dim)

    def forward(self, x):  # [R,T,D] -> [R,T,D]
        r, t, d = x.shape
        x = x.transpose(1, 2).reshape(r, d, self.grid, self.grid)
        for block in self.blocks:
            y = block(x)
            x = y + x if y.size(1) == x.size(1) else y
        return self.proj(x.flatten(2).transpose(1, 2))


def regression_loss(p, t, beta, scale):
    """core/loss.cpp: summed over D, x scale (<= 0: 1/sqrt(D)), averaged over positions."""
    p, t = p.float(), t.float()
    per = (p - t).pow(2) if beta == 0 else F.smooth_l1_loss(p, t, reduction="none", beta=beta)
    scale = scale if scale > 0 else 1 / math.sqrt(p.size(1))
    return per.sum() * scale / max(p.size(0), 1)


class Data2Vec2(Data2Vec):
    """data2vec 2.0 as core/data2vec.cpp forward_v2 runs it; the teacher, targets, EMA and
    optimizer groups are Data2Vec's (a recipe from the config)."""

    def __init__(self, c):
        nn.Module.__init__(self)
        self.recipe = dict(k=c["top_k"], layer=c["layer_norm"].replace("_norm", ""),
                           final=c["final_norm"].replace("_norm", ""), ema=c["ema"],
                           optim=c["optim"])
        self.c = c
        self.student = VisionEncoder(c["preset"], c["layer_result"])
        self.teacher = VisionEncoder(c["preset"], c["layer_result"])
        d = self.student.embeddings.cls_token.size(-1)
        dim, kernel, groups, layers = c["decoder"]
        self.decoder = Decoder(d, dim, kernel, groups, layers, self.student.g)
        self.teacher.load_state_dict(self.student.state_dict())
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()

    def apply_mask(self, source, rng):
        return inverse_block_mask(source.size(0) * self.c["clones"], self.student.g,
                                  self.c["mask_ratio"], rng)

    def forward_v2(self, source, mask):
        c, m = self.c, self.c["clones"]
        rows = mask.size(0)
        ids_keep = (~mask).nonzero()[:, 1].view(rows, -1)  # core/masking.cpp keep_indices
        kept = self.student.extract_kept_features(source, ids_keep, m)[0]  # [B*M,Tk,D]
        with torch.no_grad():
            t_out = self.teacher.teacher_features(source, None, None)
            targets = self.targets([r[:, 1:] for r in t_out[1]])  # [B,N,D] fp32, CLS excluded
        d = kept.size(2)
        noise = torch.randn(rows, mask.size(1), d) * 0.01  # DecoderOptions mask_noise_std
        restored = noise.to(kept.dtype).scatter(
            1, ids_keep.unsqueeze(-1).expand(-1, -1, d), kept)  # [B*M,1+N,D]
        decoded = self.decoder(restored[:, 1:])  # [B*M,N,D]
        selected = mask[:, 1:]
        predictions = decoded[selected]
        cls_target = targets.mean(1)  # [B,D]
        targets = targets.repeat_interleave(m, 0)
        picked = targets[selected]
        loss = regression_loss(predictions, picked, c["beta"], c["scale"])
        if c["cls_loss"] > 0:  # student CLS vs the example's mean target, x B*M (fairseq)
            cls_target = cls_target.repeat_interleave(m, 0)
            cls_loss = regression_loss(kept[:, 0], cls_target, c["beta"], c["scale"])
            loss = loss + c["cls_loss"] * rows * cls_loss
        stats = (mean_std_over_positions(picked), mean_std_over_positions(predictions),
                 selected.sum().double() / selected.numel())
        return loss, predictions, picked, stats


def v2_step_flops(model, batch, mask):
    """data2vec_bench.cpp v2_step_flops, counted the same way from the drawn mask [B*M,1+N]
    (CLS column first, never masked): the student runs on the kept patches + CLS of every copy,
    the decoder over the N grid positions. fmnist-tiny-v2 at batch 32: 18.32 GFLOP."""
    depth, d, mlp, heads = VISION[model.c["preset"]]
    image, patch, channels = VISION_IMAGES.get(model.c["preset"], (224, 16, 3))
    g = image // patch
    front = 2.0 * g * g * channels * patch * patch * d
    patches = mask[:, 1:]
    kept = (~patches).sum(1).double() + 1.0  # + CLS
    tokens, squares = kept.sum().item(), kept.pow(2).sum().item()
    rows, grid = patches.size(0), patches.size(1)
    student = depth * (2 * tokens * (4 * d * d + 2 * d * mlp) + 4 * squares * d) + rows * front
    weights = sum(p.numel() for p in model.decoder.parameters() if p.dim() >= 2)
    decoder = 2.0 * weights * rows * grid
    t = g * g + 1
    teacher = batch * (depth * (2 * t * (4 * d * d + 2 * d * mlp) + 4 * t * t * d) + front)
    return 3 * (student + decoder) + teacher


def make_input(modality, batch):
    if modality == "vision":
        return torch.randn(batch, 3, 224, 224), None
    if modality == "text":
        ids = torch.randint(5, TEXT_VOCAB, (batch, TEXT_TOKENS))
        pad = torch.zeros(batch, TEXT_TOKENS, dtype=torch.bool)
        for i in range(batch):
            real = TEXT_TOKENS - 8 * (i % 4)
            pad[i, real:] = True
            ids[i, real:] = 1
        ids[:, 0] = 0
        return ids, pad
    return torch.randn(batch, AUDIO_SAMPLES), None


def forward_flops(modality, size, teacher):
    """Forward FLOPs per example, the formula of data2vec_bench.cpp."""
    if modality == "vision":
        depth, d, mlp, heads = VISION[size]
        front, tokens = 2.0 * 196 * (3 * 16 * 16) * d, 197
    elif modality == "text":
        depth, d, mlp, heads = TEXT[size]
        front, tokens = 0.0, TEXT_TOKENS
    else:
        depth, d, mlp, heads, c = AUDIO[size]
        length, cin, front = AUDIO_SAMPLES, 1, 0.0
        for k, s in [(10, 5)] + [(3, 2)] * 4 + [(2, 2)] * 2:
            length = (length - k) // s + 1
            front += 2.0 * length * c * cin * k
            cin = c
        pos = 2.0 * length * d * (d // 16 * 19) * 5
        front = pos if teacher else front + 2.0 * length * c * d + pos
        tokens = length
    t = float(tokens)
    return depth * (2 * t * (4 * d * d + 2 * d * mlp) + 4 * t * t * d) + front


def load_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    dtypes = {"F32": torch.float32, "F64": torch.float64, "BF16": torch.bfloat16,
              "I64": torch.int64, "I32": torch.int32, "BOOL": torch.bool, "U8": torch.uint8}
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        buf = bytearray(data[8 + n + begin:8 + n + end])
        t = torch.frombuffer(buf, dtype=dtypes[info["dtype"]]) if buf else torch.empty(
            0, dtype=dtypes[info["dtype"]])
        out[name] = t.reshape(info["shape"])
    return out, header.get("__metadata__", {})


def length_suffix(modality, a):
    """The sequence length in the configuration's name when it is not the default."""
    if modality == "text" and a.tokens != 128:
        return f" T{a.tokens}"
    if modality == "audio" and a.seconds != 2.0:
        return f" {a.seconds:g}s"
    return ""


def blas_library():
    """The BLAS this process mapped, found as train/device.cpp blas_library() finds it."""
    with open("/proc/self/maps") as maps:
        for line in maps:
            for name in ("openblas", "libmkl", "blis", "libblas.so"):
                if name in line:
                    return line[line.index("/"):].strip() if "/" in line else name
    return "unknown"


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="vision-tiny")
    ap.add_argument("--mode", default="train", choices=["train", "extract"])
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"])
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--tokens", type=int, default=128, help="text: tokens per example")
    ap.add_argument("--seconds", type=float, default=2.0, help="audio: seconds per clip")
    ap.add_argument("--check", help="replay a data2vec_bench --dump file; print its losses")
    ap.add_argument("--yaml", help="the model of this training config (data2vec 2.0 vision; "
                    "train mode), as data2vec_bench --yaml")
    a = ap.parse_args()

    global TEXT_TOKENS, AUDIO_SAMPLES
    TEXT_TOKENS, AUDIO_SAMPLES = a.tokens, int(round(a.seconds * 16000))
    torch.set_num_threads(a.threads if a.threads > 0 else os.cpu_count())
    torch.manual_seed(a.seed)
    if a.yaml:
        return run_yaml(a)
    fixed = None
    if a.check:
        tensors, meta = load_safetensors(a.check)
        a.config = meta["config"]
        a.warmup, a.reps = 0, 2
    modality, size = a.config.split("-", 1)
    model = Data2Vec(modality, size, dropout=0.0 if a.check else 0.1)
    if a.check:
        state = {k: v for k, v in tensors.items() if not k.startswith(("input.", "output."))}
        missing = set(model.state_dict()) ^ set(state)
        if missing:
            sys.exit(f"reference.py: names differ from the C++ dump: {sorted(missing)[:10]}")
        model.load_state_dict(state)
        source = tensors["input.source"]
        padding = tensors.get("input.padding_mask")
        mask = tensors["input.mask"]
        a.batch = source.size(0)
        student_source = tensors["input.student_source"]
        fixed = (student_source, mask)
    else:
        source, padding = make_input(modality, a.batch)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.dtype == "bf16" else (
        lambda: torch.autocast("cpu", enabled=False))

    result = {"impl": "python", "config": a.config + length_suffix(modality, a), "mode": a.mode,
              "batch": a.batch,
              "dtype": a.dtype, "threads": torch.get_num_threads(), "torch": torch.__version__,
              "blas": blas_library(),
              "params": sum(p.numel() for p in model.student.parameters()),
              "params_total": sum(p.numel() for p in model.parameters())}
    times, losses = [], []
    if a.mode == "extract":
        model.student.eval()
        result["flops"] = a.batch * forward_flops(modality, size, False)
        for i in range(a.warmup + a.reps):
            t0 = time.perf_counter()
            with torch.inference_mode(), autocast():
                out = model.student.extract_features(source, padding, None)
                out[0].sum().item()
            if i >= a.warmup:
                times.append(time.perf_counter() - t0)
    else:
        model.train()
        optimizer = make_optimizer(model)
        clip = model.recipe["optim"][4]
        trainable = [p for p in model.parameters() if p.requires_grad]
        masked_positions = 0
        for i in range(a.warmup + a.reps):
            t0 = time.perf_counter()
            optimizer.zero_grad(set_to_none=False)
            student_source, mask = fixed if fixed else model.student.apply_mask(source, padding)
            with autocast():
                loss, predictions, targets, stats = model.forward_masked(
                    source, padding, student_source, mask)
            loss.backward()
            value = loss.item()
            for s in stats:
                s.item()
            if clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, clip)
            optimizer.step()
            model.ema_step(i)
            elapsed = time.perf_counter() - t0
            losses.append(value)
            masked_positions = predictions.size(0)
            if i >= a.warmup:
                times.append(elapsed)
        student = forward_flops(modality, size, False)
        teacher = forward_flops(modality, size, True)
        d = model.head[0].in_features
        head = 2 * d * d if model.recipe["head"] == 0 else 2 * 2 * d * model.recipe["head"] * d
        result["flops"] = a.batch * (3 * student + teacher) + 3 * masked_positions * head
        result["losses"] = losses
    finish(result, times, a.batch)


def finish(result, times, batch):
    times_sorted = sorted(times)
    n = len(times_sorted)
    med = times_sorted[n // 2] if n % 2 else 0.5 * (times_sorted[n // 2 - 1] + times_sorted[n // 2])
    result.update(times_s=times, median_s=med, samples_per_s=batch / med,
                  gflops=result["flops"] / med / 1e9, peak_rss_mb=peak_rss_mb())
    print(json.dumps(result), flush=True)


def run_yaml(a):
    """data2vec_bench --yaml CONFIG --mode train: the config's data2vec 2.0 step (main's train
    loop in data2vec_bench.cpp): draw the mask -> student over the kept tokens of every copy ->
    teacher -> targets -> decoder -> loss -> backward -> clip -> AdamW (lr, betas, weight decay
    of the config, no schedule) -> EMA; loss and statistics read back as the trainer does."""
    if a.mode != "train":
        sys.exit("reference.py: --yaml times train mode only")
    c = load_config(a.yaml)
    torch.manual_seed(c["seed"])  # app/builders.cpp make_model seeds with train.seed
    model = Data2Vec2(c)
    image, _, channels = VISION_IMAGES.get(c["preset"], (224, 16, 3))
    source = torch.randn(a.batch, channels, image, image)
    rng = random.Random(a.seed + 1)  # the C++ mask generator's seed
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if a.dtype == "bf16" else (
        lambda: torch.autocast("cpu", enabled=False))
    result = {"impl": "python", "config": os.path.basename(a.yaml), "mode": a.mode,
              "batch": a.batch, "dtype": a.dtype, "threads": torch.get_num_threads(),
              "torch": torch.__version__, "blas": blas_library(),
              "params": sum(p.numel() for p in model.student.parameters()),
              "params_total": sum(p.numel() for p in model.parameters())}
    model.train()
    optimizer = make_optimizer(model)
    clip = c["optim"][4]
    trainable = [p for p in model.parameters() if p.requires_grad]  # student + decoder
    times, losses = [], []
    for i in range(a.warmup + a.reps):
        t0 = time.perf_counter()
        optimizer.zero_grad(set_to_none=False)
        mask = model.apply_mask(source, rng)  # drawn inside the step, as the C++ does
        with autocast():
            loss, predictions, targets, stats = model.forward_v2(source, mask)
        loss.backward()
        value = loss.item()
        for s in stats:
            s.item()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(trainable, clip)
        optimizer.step()
        model.ema_step(i)
        elapsed = time.perf_counter() - t0
        losses.append(value)
        result["flops"] = v2_step_flops(model, a.batch, mask)
        if i >= a.warmup:
            times.append(elapsed)
    result["losses"] = losses
    finish(result, times, a.batch)


if __name__ == "__main__":
    main()
