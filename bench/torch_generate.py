"""Anchor: PyTorch generating from a chainrule GPT checkpoint (gpt2 arch) with a key/value cache.

Loads CHECKPOINT/model.safetensors (nanoGPT names, as chainrule writes them), then samples
--tokens tokens after --prompt (token ids) --reps times: the prompt runs through the model once,
then each new token alone, attending over the cached keys and values of every earlier position
(torch.cat onto the cache, as Hugging Face's GPT-2 does). Softmax of logits / temperature, then
torch.multinomial. Prints one JSON line: tokens/s of each repetition (wall clock, and per CPU-second of this
process, which a busy machine disturbs less) and the greedy tokens of the first 20 steps (for
checking that both sides run the same model).

Usage: OMP_NUM_THREADS=1 /usr/bin/python3 bench/torch_generate.py CHECKPOINT --prompt 1,2 --tokens 200 --reps 3
"""
import argparse, json, math, struct, time
import torch
import torch.nn.functional as F


def load_safetensors(path):
    """The safetensors format by hand (8-byte header length, JSON header, raw little-endian data); F32 only."""
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: dtype {info['dtype']}"
        a, b = info["data_offsets"]
        out[name] = torch.frombuffer(bytearray(data[a:b]), dtype=torch.float32).reshape(info["shape"])
    return out


class CachedGPT(torch.nn.Module):
    """nanoGPT's forward, one block at a time, with per-layer (k, v) caches of shape (H, T, hs)."""

    def __init__(self, w, n_head):
        super().__init__()
        self.w, self.H = w, n_head
        self.L = sum(1 for k in w if k.endswith(".attn.c_attn.weight"))
        self.C = w["transformer.wte.weight"].shape[1]

    def ln(self, x, p):
        return F.layer_norm(x, (self.C,), self.w[p + ".weight"], self.w.get(p + ".bias"), 1e-5)

    def lin(self, x, p):
        return F.linear(x, self.w[p + ".weight"], self.w.get(p + ".bias"))

    def forward(self, ids, cache):
        w, C, H = self.w, self.C, self.H
        hs = C // H
        start = cache[0][0].shape[1] if cache[0] is not None else 0
        n = ids.shape[0]
        x = w["transformer.wte.weight"][ids] + w["transformer.wpe.weight"][start:start + n]  # (n, C)
        for l in range(self.L):
            p = f"transformer.h.{l}"
            q, k, v = self.lin(self.ln(x, p + ".ln_1"), p + ".attn.c_attn").split(C, dim=1)
            q, k, v = [z.view(n, H, hs).transpose(0, 1) for z in (q, k, v)]  # (H, n, hs)
            if cache[l] is not None:
                k = torch.cat([cache[l][0], k], 1)
                v = torch.cat([cache[l][1], v], 1)
            cache[l] = (k, v)
            att = (q @ k.transpose(-2, -1)) / math.sqrt(hs)  # (H, n, start + n)
            if n > 1:
                mask = torch.ones(n, start + n, dtype=torch.bool).tril(start)
                att = att.masked_fill(~mask, float("-inf"))
            y = (att.softmax(-1) @ v).transpose(0, 1).reshape(n, C)
            x = x + self.lin(y, p + ".attn.c_proj")
            x = x + self.lin(F.gelu(self.lin(self.ln(x, p + ".ln_2"), p + ".mlp.c_fc")), p + ".mlp.c_proj")
        head = w["lm_head.weight"] if "lm_head.weight" in w else w["transformer.wte.weight"]
        return F.linear(self.ln(x, "transformer.ln_f"), head, w.get("lm_head.bias"))  # (n, V)


def generate(m, prompt, tokens, temperature, gen):
    cache = [None] * m.L
    ids = torch.tensor(prompt)
    out = []
    for _ in range(tokens):
        logits = m(ids, cache)[-1]
        if temperature == 0:
            nxt = int(logits.argmax())
        else:
            nxt = int(torch.multinomial((logits / temperature).softmax(-1), 1, generator=gen))
        out.append(nxt)
        ids = torch.tensor([nxt])
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoint")
    ap.add_argument("--n-head", type=int, required=True)
    ap.add_argument("--prompt", default="1")
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--reps", type=int, default=3)
    a = ap.parse_args()
    torch.set_num_threads(1)
    m = CachedGPT(load_safetensors(a.checkpoint + "/model.safetensors"), a.n_head)
    prompt = [int(t) for t in a.prompt.split(",")]
    gen = torch.Generator().manual_seed(0)
    with torch.inference_mode():
        greedy = generate(m, prompt, 20, 0, gen)
        generate(m, prompt, 10, a.temperature, gen)  # warm-up
        rates, cpu_rates = [], []
        for _ in range(a.reps):
            t, c = time.perf_counter(), time.process_time()
            generate(m, prompt, a.tokens, a.temperature, gen)
            rates.append(a.tokens / (time.perf_counter() - t))
            cpu_rates.append(a.tokens / (time.process_time() - c))
    print(json.dumps({"tokensPerSecond": rates, "tokensPerCpuSecond": cpu_rates, "greedy": greedy}))


if __name__ == "__main__":
    main()
