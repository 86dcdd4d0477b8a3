// The PyTorch side of the UNet benchmarks: a small hand-written torch module with the layer structure
// of diffusers' UNet2DConditionModel (same convs, norms, attention, GEGLU feed-forward, skip
// concatenations) built from the same config with random weights. Shared by the CPU reference
// (torch_reference.ts) and the CUDA one (torch_cuda.ts), which append their own timing code. The
// script reads one JSON argument: the config below, plus `sdpa` (attention through
// F.scaled_dot_product_attention) where the caller wants it.
import type { UNetConfig } from "../io/diffusers_config.ts";

/** Python source defining `UNet` (and `cfg`, `G`, `SDPA`); the caller appends the code that runs it. */
export const TORCH_UNET_SOURCE = String.raw`
import json, math, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
cfg = json.loads(sys.argv[1])
G = cfg["groups"]

class Resnet(nn.Module):
    def __init__(s, cin, cout, temb):
        super().__init__()
        s.norm1 = nn.GroupNorm(G, cin, eps=cfg["eps"]); s.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        s.time_emb_proj = nn.Linear(temb, cout)
        s.norm2 = nn.GroupNorm(G, cout, eps=cfg["eps"]); s.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        s.conv_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
    def forward(s, x, t):
        h = s.conv1(F.silu(s.norm1(x)))
        h = h + s.time_emb_proj(t)[:, :, None, None]
        h = s.conv2(F.silu(s.norm2(h)))
        return (s.conv_shortcut(x) if s.conv_shortcut is not None else x) + h

# SDPA: attention through F.scaled_dot_product_attention (torch >= 2.0), else bmm + softmax as
# diffusers' default processor before PyTorch 2.
SDPA = bool(cfg.get("sdpa", False))

class Attention(nn.Module):
    def __init__(s, dim, kv, heads):
        super().__init__()
        s.h = heads
        s.to_q = nn.Linear(dim, dim, bias=False); s.to_k = nn.Linear(kv, dim, bias=False)
        s.to_v = nn.Linear(kv, dim, bias=False); s.to_out = nn.Linear(dim, dim)
    def forward(s, x, ctx=None):
        ctx = x if ctx is None else ctx
        B, L, D = x.shape; d = D // s.h
        q = s.to_q(x).view(B, L, s.h, d).transpose(1, 2).reshape(B * s.h, L, d)
        k = s.to_k(ctx).view(B, -1, s.h, d).transpose(1, 2).reshape(B * s.h, -1, d)
        v = s.to_v(ctx).view(B, -1, s.h, d).transpose(1, 2).reshape(B * s.h, -1, d)
        if SDPA:
            o = F.scaled_dot_product_attention(q.view(B, s.h, L, d), k.view(B, s.h, -1, d), v.view(B, s.h, -1, d))
        else:
            e = torch.empty(q.shape[0], q.shape[1], k.shape[1], device=q.device, dtype=q.dtype)
            o = torch.bmm(torch.baddbmm(e, q, k.transpose(1, 2), beta=0, alpha=d ** -0.5).softmax(-1), v)
        return s.to_out(o.view(B, s.h, L, d).transpose(1, 2).reshape(B, L, D))

class Block(nn.Module):
    def __init__(s, dim, cross, heads):
        super().__init__()
        s.norm1 = nn.LayerNorm(dim); s.attn1 = Attention(dim, dim, heads)
        s.norm2 = nn.LayerNorm(dim); s.attn2 = Attention(dim, cross, heads)
        s.norm3 = nn.LayerNorm(dim); s.ff_proj = nn.Linear(dim, 8 * dim); s.ff_out = nn.Linear(4 * dim, dim)
    def forward(s, x, ctx):
        x = s.attn1(s.norm1(x)) + x
        x = s.attn2(s.norm2(x), ctx) + x
        a, g = s.ff_proj(s.norm3(x)).chunk(2, dim=-1)
        return s.ff_out(a * F.gelu(g)) + x

class Transformer(nn.Module):
    def __init__(s, ch, cross, heads):
        super().__init__()
        s.norm = nn.GroupNorm(G, ch, eps=1e-6); s.proj_in = nn.Conv2d(ch, ch, 1)
        s.blocks = nn.ModuleList([Block(ch, cross, heads)]); s.proj_out = nn.Conv2d(ch, ch, 1)
    def forward(s, x, ctx):
        B, C, H, W = x.shape
        h = s.proj_in(s.norm(x)).permute(0, 2, 3, 1).reshape(B, H * W, C)
        for b in s.blocks: h = b(h, ctx)
        return s.proj_out(h.reshape(B, H, W, C).permute(0, 3, 1, 2)) + x

class UNet(nn.Module):
    def __init__(s):
        super().__init__()
        boc = cfg["boc"]; temb = 4 * boc[0]; L = cfg["layers"]; heads = cfg["heads"]; cross = cfg["cross"]
        s.conv_in = nn.Conv2d(cfg["cin"], boc[0], 3, padding=1)
        s.t1 = nn.Linear(boc[0], temb); s.t2 = nn.Linear(temb, temb)
        s.down = nn.ModuleList(); out = boc[0]
        for i, ty in enumerate(cfg["down"]):
            inc, out = out, boc[i]
            m = nn.Module()
            m.res = nn.ModuleList([Resnet(inc if j == 0 else out, out, temb) for j in range(L)])
            m.att = nn.ModuleList([Transformer(out, cross, heads) for j in range(L)]) if ty.startswith("CrossAttn") else None
            m.ds = nn.Conv2d(out, out, 3, stride=2, padding=1) if i < len(boc) - 1 else None
            s.down.append(m)
        top = boc[-1]
        s.mid_res = nn.ModuleList([Resnet(top, top, temb), Resnet(top, top, temb)]); s.mid_att = Transformer(top, cross, heads)
        rev = boc[::-1]; prev = rev[0]; s.up = nn.ModuleList()
        for i, ty in enumerate(cfg["up"]):
            out = rev[i]; inc = rev[min(i + 1, len(boc) - 1)]
            m = nn.Module()
            m.res = nn.ModuleList([Resnet((prev if j == 0 else out) + (inc if j == L else out), out, temb) for j in range(L + 1)])
            m.att = nn.ModuleList([Transformer(out, cross, heads) for j in range(L + 1)]) if ty.startswith("CrossAttn") else None
            m.us = nn.Conv2d(out, out, 3, padding=1) if i < len(boc) - 1 else None
            s.up.append(m); prev = out
        s.norm_out = nn.GroupNorm(G, boc[0], eps=cfg["eps"]); s.conv_out = nn.Conv2d(boc[0], 4, 3, padding=1)
    def forward(s, x, t, ctx):
        half = s.conv_in.out_channels // 2
        f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32, device=x.device) / half)
        e = t[:, None].float() * f[None]
        e = torch.cat([torch.cos(e), torch.sin(e)], -1).to(x.dtype)
        temb = F.silu(s.t2(F.silu(s.t1(e))))
        h = s.conv_in(x); skips = [h]
        for m in s.down:
            for j, r in enumerate(m.res):
                h = r(h, temb)
                if m.att is not None: h = m.att[j](h, ctx)
                skips.append(h)
            if m.ds is not None: h = m.ds(h); skips.append(h)
        h = s.mid_res[0](h, temb); h = s.mid_att(h, ctx); h = s.mid_res[1](h, temb)
        for m in s.up:
            for j, r in enumerate(m.res):
                h = r(torch.cat([h, skips.pop()], 1), temb)
                if m.att is not None: h = m.att[j](h, ctx)
            if m.us is not None: h = m.us(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return s.conv_out(F.silu(s.norm_out(h)))
`;

/** The script argument's model part, from our parsed config. */
export function torchUnetArgs(c: UNetConfig): Record<string, unknown> {
  return {
    groups: c.normNumGroups, eps: c.normEps, boc: c.blockOutChannels, layers: c.layersPerBlock[0],
    heads: c.attentionHeads[0], cross: c.crossAttentionDim[0], cin: c.inChannels,
    down: c.downBlockTypes, up: c.upBlockTypes,
  };
}
