"""PyTorch training step at a given size, for bench/sizes.ts: the anchors' models
(../shared/anchors/torch_gpt.py and torch_mlp.py, line for line) with their sizes as arguments.
Prints ms/step, CPU ms/step and the peak resident memory (VmHWM) as one JSON line.

  OMP_NUM_THREADS=1 python3 torch_sizes.py gpt N_LAYER N_HEAD N_EMBD BLOCK BATCH STEPS WARMUP
  OMP_NUM_THREADS=1 python3 torch_sizes.py mlp HIDDEN1 HIDDEN2 BATCH STEPS WARMUP
"""
import json, math, resource, sys, time
import torch, torch.nn as nn, torch.nn.functional as F

torch.set_num_threads(1); torch.manual_seed(0)
kind = sys.argv[1]


def gpt_step(L, H, C, T, B, V=65):
    class Block(nn.Module):
        def __init__(s):
            super().__init__(); s.ln1 = nn.LayerNorm(C); s.qkv = nn.Linear(C, 3 * C); s.proj = nn.Linear(C, C)
            s.ln2 = nn.LayerNorm(C); s.fc = nn.Linear(C, 4 * C); s.out = nn.Linear(4 * C, C)
            s.register_buffer("mask", torch.tril(torch.ones(T, T)).bool())
        def forward(s, x):
            b, t, c = x.shape
            q, k, v = s.qkv(s.ln1(x)).split(C, dim=2)
            q, k, v = [z.view(b, t, H, c // H).transpose(1, 2) for z in (q, k, v)]  # (B, H, T, hs)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(c // H)
            att = att.masked_fill(~s.mask[:t, :t], float("-inf")).softmax(-1)
            x = x + s.proj((att @ v).transpose(1, 2).reshape(b, t, c))
            return x + s.out(F.gelu(s.fc(s.ln2(x))))
    class GPT(nn.Module):
        def __init__(s):
            super().__init__(); s.tok = nn.Embedding(V, C); s.pos = nn.Embedding(T, C)
            s.blocks = nn.Sequential(*[Block() for _ in range(L)]); s.ln = nn.LayerNorm(C); s.head = nn.Linear(C, V)
        def forward(s, idx):
            x = s.tok(idx) + s.pos(torch.arange(idx.shape[1]))
            return s.head(s.ln(s.blocks(x)))
    m = GPT(); opt = torch.optim.AdamW(m.parameters(), lr=1e-3)
    X = torch.randint(0, V, (B, T)); Y = torch.randint(0, V, (B, T))
    def step():
        opt.zero_grad(); F.cross_entropy(m(X).view(-1, V), Y.view(-1)).backward(); opt.step()
    return m, step


def mlp_step(h1, h2, B):
    m = torch.nn.Sequential(torch.nn.Linear(784, h1), torch.nn.ReLU(), torch.nn.Linear(h1, h2), torch.nn.ReLU(), torch.nn.Linear(h2, 10))
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
    X = torch.rand(B, 784); y = torch.randint(0, 10, (B,))
    lossf = torch.nn.CrossEntropyLoss()
    def step():
        opt.zero_grad(); loss = lossf(m(X), y); loss.backward(); opt.step()
    return m, step


a = [int(v) for v in sys.argv[2:]]
if kind == "gpt":
    L, H, C, T, B, steps, warmup = a
    m, step = gpt_step(L, H, C, T, B)
elif kind == "mlp":
    h1, h2, B, steps, warmup = a
    m, step = mlp_step(h1, h2, B)
else:
    sys.exit(f"torch_sizes.py: unknown model '{kind}' (gpt or mlp)")
def peak_rss_mib():
    """VmHWM: getrusage's ru_maxrss of a spawned process starts at its parent's RSS when it forked (Linux)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


for _ in range(warmup): step()
t, c = time.perf_counter(), time.process_time()
for _ in range(steps): step()
dt, dc = time.perf_counter() - t, time.process_time() - c
print(json.dumps({"msPerStep": dt / steps * 1e3, "cpuMsPerStep": dc / steps * 1e3, "peakRssMiB": peak_rss_mib(),
                  "params": sum(p.numel() for p in m.parameters())}))
