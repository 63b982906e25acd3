#!/usr/bin/env python3
"""Write a tiny *random-weight* SD1.5-family checkpoint that ComfyUI (0.3.75) detects
and runs with CheckpointLoaderSimple -> CLIPTextEncode -> KSampler -> VAEDecode.

Nothing is downloaded: every tensor is generated here from a fixed seed, so the
file is byte-for-byte reproducible. The images it produces are meaningless noise;
the point is to exercise the real loading / sampling / decoding code paths.

What ComfyUI requires (comfy/model_detection.py + comfy/supported_models.py):
  * UNet under "model.diffusion_model." -- detected as SD15 because
    model_channels (input_blocks.0.0.weight.shape[0]) == 320, the first
    transformer's attn2.to_k has in_features (context_dim) == 768, proj_in is a
    1x1 conv (use_linear_in_transformer False), no label_emb (adm None) and
    in_channels == 4. Everything else (num_res_blocks, channel_mult, depths,
    middle block) is read from the keys, so we use the smallest shape possible:
    one level, one ResBlock, one transformer block, no middle block, no
    transformers in the two output blocks  -> 13.6 M parameters.
  * Text encoder under "cond_stage_model.transformer.text_model." -- its config
    is fixed by comfy/sd1_clip_config.json (CLIP-L: 12 layers, 768 wide,
    49408-token vocabulary) -> 123 M parameters; weights absent from the file
    would be left *uninitialised* by ComfyUI, so all are written.
  * VAE under "first_stage_model." -- a TAESD ("taesd_encoder.*",
    "taesd_decoder.*", "vae_scale", "vae_shift") instead of the 83 M-parameter
    KL VAE; comfy/sd.py VAE() recognises it by "taesd_decoder.1.weight".

usage: python scripts/make_tiny_ckpt.py --out-dir .cache/models
writes checkpoints/tiny-sd15-random.safetensors and loras/tiny-lora.safetensors there, each
atomically (a half-written file never looks finished). Needs only torch and safetensors, so it
runs in ComfyUI's environment. Adapted from shared/design/reference_make_tiny_ckpt.py.
"""

import argparse
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

UNET = "model.diffusion_model."
CLIP = "cond_stage_model.transformer.text_model."
VAE = "first_stage_model."

MC = 320  # model_channels: must be 320 for SD15 detection
EMB = MC * 4  # time embedding width
CTX = 768  # context_dim: must be 768 (CLIP-L width)
LATENT = 4


class Gen:
    def __init__(self, seed, dtype):
        self.g = torch.Generator().manual_seed(seed)
        self.dtype = dtype
        self.sd = {}

    def randn(self, name, shape, std):
        t = torch.randn(shape, generator=self.g, dtype=torch.float32).mul_(std)
        self.sd[name] = t.to(self.dtype)

    def const(self, name, shape, value, dtype=None):
        self.sd[name] = torch.full(shape, float(value), dtype=dtype or self.dtype)

    # building blocks -------------------------------------------------------
    def linear(self, name, n_in, n_out, bias=True, std=None):
        self.randn(name + ".weight", (n_out, n_in), std if std is not None else n_in**-0.5)
        if bias:
            self.const(name + ".bias", (n_out,), 0)

    def conv(self, name, n_in, n_out, k, bias=True, std=None):
        self.randn(
            name + ".weight",
            (n_out, n_in, k, k),
            std if std is not None else (n_in * k * k) ** -0.5,
        )
        if bias:
            self.const(name + ".bias", (n_out,), 0)

    def norm(self, name, n):
        self.const(name + ".weight", (n,), 1)
        self.const(name + ".bias", (n,), 0)


def unet(g):
    p = UNET
    g.linear(p + "time_embed.0", MC, EMB)
    g.linear(p + "time_embed.2", EMB, EMB)
    g.conv(p + "input_blocks.0.0", LATENT, MC, 3)

    def resblock(pre, c_in, c_out):
        g.norm(pre + "in_layers.0", c_in)
        g.conv(pre + "in_layers.2", c_in, c_out, 3)
        g.linear(pre + "emb_layers.1", EMB, c_out)
        g.norm(pre + "out_layers.0", c_out)
        g.conv(pre + "out_layers.3", c_out, c_out, 3, std=0.0)  # zero-init like the real model
        if c_in != c_out:
            g.conv(pre + "skip_connection", c_in, c_out, 1)

    resblock(p + "input_blocks.1.0.", MC, MC)
    # one SpatialTransformer (depth 1): the only place context_dim is detected from
    st = p + "input_blocks.1.1."
    g.norm(st + "norm", MC)
    g.conv(st + "proj_in", MC, MC, 1)  # 4-D => use_linear_in_transformer False
    tb = st + "transformer_blocks.0."
    for a in ("attn1", "attn2"):
        kv_in = MC if a == "attn1" else CTX  # attn2.to_k in_features == context_dim
        g.linear(tb + a + ".to_q", MC, MC, bias=False)
        g.linear(tb + a + ".to_k", kv_in, MC, bias=False)
        g.linear(tb + a + ".to_v", kv_in, MC, bias=False)
        g.linear(tb + a + ".to_out.0", MC, MC)
    g.linear(tb + "ff.net.0.proj", MC, MC * 8)  # GEGLU: 2 * 4 * dim
    g.linear(tb + "ff.net.2", MC * 4, MC)
    for n in ("norm1", "norm2", "norm3"):
        g.norm(tb + n, MC)
    g.conv(st + "proj_out", MC, MC, 1)
    # no middle_block keys at all => transformer_depth_middle = -2 (no middle block)
    # output blocks: num_res_blocks + 1 = 2, each sees a 320-channel skip => 640 in
    resblock(p + "output_blocks.0.0.", 2 * MC, MC)
    resblock(p + "output_blocks.1.0.", 2 * MC, MC)
    g.norm(p + "out.0", MC)
    g.conv(p + "out.2", MC, LATENT, 3, std=0.02)


def clip_l(g):
    p = CLIP
    width, layers, inter, vocab, pos = 768, 12, 3072, 49408, 77
    g.randn(p + "embeddings.token_embedding.weight", (vocab, width), 0.02)
    g.randn(p + "embeddings.position_embedding.weight", (pos, width), 0.01)
    for i in range(layers):
        lp = f"{p}encoder.layers.{i}."
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            g.linear(lp + "self_attn." + proj, width, width, std=0.02)
        g.norm(lp + "layer_norm1", width)
        g.norm(lp + "layer_norm2", width)
        g.linear(lp + "mlp.fc1", width, inter, std=0.02)
        g.linear(lp + "mlp.fc2", inter, width, std=0.02)
    g.norm(p + "final_layer_norm", width)
    # (real SD1.5 checkpoints carry no text_projection either; ComfyUI ignores it)


def taesd(g):
    """comfy/taesd/taesd.py Encoder/Decoder, 64 channels, as nn.Sequential indices."""

    def block(pre, c=64):
        # Block.conv = Sequential(conv, ReLU, conv, ReLU, conv) -> indices 0, 2, 4
        for j in (0, 2, 4):
            g.conv(f"{pre}.conv.{j}", c, c, 3)

    e = VAE + "taesd_encoder."
    g.conv(e + "0", 3, 64, 3)
    block(e + "1")
    idx = 2
    for _ in range(3):
        g.conv(f"{e}{idx}", 64, 64, 3, bias=False)  # stride-2 conv
        for k in range(3):
            block(f"{e}{idx + 1 + k}")
        idx += 4
    g.conv(f"{e}{idx}", 64, LATENT, 3)  # idx == 14

    d = VAE + "taesd_decoder."
    # 0 Clamp, 1 conv, 2 ReLU, then 3x [Block x3, Upsample, conv(no bias)], Block, conv
    g.conv(d + "1", LATENT, 64, 3)
    idx = 3
    for _ in range(3):
        for k in range(3):
            block(f"{d}{idx + k}")
        g.conv(f"{d}{idx + 4}", 64, 64, 3, bias=False)
        idx += 5
    block(f"{d}{idx}")  # idx == 18
    g.conv(f"{d}{idx + 1}", 64, 3, 3)
    # same values ComfyUI's VAELoader puts in for an SD1.x TAESD
    g.const(VAE + "vae_scale", (), 0.18215, dtype=torch.float32)
    g.const(VAE + "vae_shift", (), 0.0, dtype=torch.float32)


def lora(seed, rank=4):
    """A tiny LoRA in ComfyUI's kohya-style naming for this UNet and CLIP."""
    g = Gen(seed + 1, torch.float16)
    unet_targets = {  # lora name -> (in, out)
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_q": (MC, MC),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_k": (MC, MC),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_v": (MC, MC),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn1_to_out_0": (MC, MC),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_k": (CTX, MC),
        "lora_unet_input_blocks_1_1_transformer_blocks_0_attn2_to_v": (CTX, MC),
    }
    te_targets = {
        f"lora_te_text_model_encoder_layers_{i}_self_attn_{p}": (768, 768)
        for i in (0, 11)
        for p in ("q_proj", "v_proj")
    }
    for name, (n_in, n_out) in {**unet_targets, **te_targets}.items():
        g.randn(name + ".lora_down.weight", (rank, n_in), 0.02)
        g.randn(name + ".lora_up.weight", (n_out, rank), 0.02)
        g.const(name + ".alpha", (), rank)
    return g.sd


def write(sd, path):
    """Write atomically, so an interrupted run never leaves a file that looks complete."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    save_file(sd, str(tmp), metadata={"format": "pt"})
    tmp.replace(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out-dir", type=Path, default=Path(".cache/models"))
    ap.add_argument(
        "--clip-dtype",
        choices=["fp16", "fp8", "fp32"],
        default="fp16",
        help="storage dtype of the CLIP-L weights (the bulk of the file)",
    )
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    t0 = time.time()
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    g_unet = Gen(a.seed, torch.float16)
    unet(g_unet)
    taesd(g_unet)
    clip_dtype = {"fp16": torch.float16, "fp32": torch.float32, "fp8": torch.float8_e4m3fn}[
        a.clip_dtype
    ]
    g_clip = Gen(a.seed + 7, clip_dtype)
    clip_l(g_clip)
    sd = {**g_unet.sd, **g_clip.sd}
    ckpt = a.out_dir / "checkpoints" / "tiny-sd15-random.safetensors"
    write(sd, ckpt)
    n = sum(t.numel() for t in sd.values())
    print(
        f"wrote {ckpt}: {len(sd)} tensors, {n / 1e6:.1f} M params, "
        f"{ckpt.stat().st_size / 2**20:.1f} MiB in {time.time() - t0:.2f}s",
        file=sys.stderr,
    )
    lora_path = a.out_dir / "loras" / "tiny-lora.safetensors"
    write(lora(a.seed), lora_path)
    print(f"wrote {lora_path}: {lora_path.stat().st_size / 2**10:.1f} KiB", file=sys.stderr)


if __name__ == "__main__":
    main()
