// The PyTorch CPU reference of `rl4pix bench unet`: a small hand-written torch module with the
// layer structure of diffusers' UNet2DConditionModel (same convs, norms, attention, GEGLU
// feed-forward, skip concatenations) built from the same config, random weights, timed in the same
// run as our forward so the ratio is meaningful on a shared machine. Needs /usr/bin/python3 with
// torch (Debian's python3-torch); returns null when it is missing.
import { spawnSync } from "node:child_process";
import type { UNetConfig } from "../io/diffusers_config.ts";

const SCRIPT = String.raw`
import json, math, sys, time
import torch, torch.nn as nn, torch.nn.functional as F
cfg = json.loads(sys.argv[1])
torch.set_num_threads(cfg["threads"])
torch.manual_seed(0)
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
        p = torch.baddbmm(torch.empty(q.shape[0], q.shape[1], k.shape[1]), q, k.transpose(1, 2), beta=0, alpha=d ** -0.5).softmax(-1)
        o = torch.bmm(p, v).view(B, s.h, L, d).transpose(1, 2).reshape(B, L, D)
        return s.to_out(o)

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
        f = torch.exp(-math.log(10000) * torch.arange(half, dtype=torch.float32) / half)
        e = t[:, None].float() * f[None]
        e = torch.cat([torch.cos(e), torch.sin(e)], -1)
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

net = UNet().eval()
B, S = cfg["batch"], cfg["latent"]
x = torch.randn(B, cfg["cin"], S, S); t = torch.full((B,), 500); ctx = torch.randn(B, 77, cfg["cross"])
with torch.no_grad():
    t0 = time.perf_counter(); net(x, t, ctx); first = time.perf_counter() - t0
    ts = []
    c0 = time.process_time()
    for _ in range(cfg["reps"]):
        t0 = time.perf_counter(); net(x, t, ctx); ts.append(time.perf_counter() - t0)
    cpu = (time.process_time() - c0) / cfg["reps"]
ts.sort()
print(json.dumps({"first_ms": first * 1e3, "ms": ts[len(ts) // 2] * 1e3, "cpu_ms": cpu * 1e3, "all_ms": [v * 1e3 for v in ts], "threads": torch.get_num_threads(), "torch": torch.__version__}))
`;

export interface TorchTiming {
  firstMs: number;
  ms: number;
  /** CPU milliseconds per call (all threads). */
  cpuMs: number;
  threads: number;
  version: string;
}

/** Time the torch UNet forward of this config (no-grad, f32) with `threads` threads; null when torch is missing. */
export function torchUnetForward(c: UNetConfig, latent: number, batch: number, reps: number, threads = 2): TorchTiming | null {
  const arg = {
    threads, groups: c.normNumGroups, eps: c.normEps, boc: c.blockOutChannels, layers: c.layersPerBlock[0],
    heads: c.attentionHeads[0], cross: c.crossAttentionDim[0], cin: c.inChannels,
    down: c.downBlockTypes, up: c.upBlockTypes, batch, latent, reps,
  };
  const r = spawnSync("/usr/bin/python3", ["-c", SCRIPT, JSON.stringify(arg)], { encoding: "utf8", timeout: 30 * 60_000 });
  if (r.status !== 0) {
    if (/No module named 'torch'/.test(r.stderr ?? "")) return null;
    if (r.error && (r.error as NodeJS.ErrnoException).code === "ENOENT") return null;
    throw new Error(`bench: the torch reference failed: ${(r.stderr ?? "").trim().split("\n").slice(-3).join(" / ")}`);
  }
  const o = JSON.parse(r.stdout.trim().split("\n").pop()!) as { first_ms: number; ms: number; cpu_ms: number; threads: number; torch: string };
  return { firstMs: o.first_ms, ms: o.ms, cpuMs: o.cpu_ms, threads: o.threads, version: o.torch };
}
