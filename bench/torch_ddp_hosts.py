"""PyTorch DDP (gloo, CPU) beside bench/multihost.ts: the anchor's MLP (784-512-256-10, Adam,
lr 1e-3), one process per rank and one thread each, launched the way torchrun does it — by
environment: RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT (and GLOO_SOCKET_IFNAME). The global
batch is split evenly over the ranks. Rank 0 prints one JSON line.
usage: RANK=.. WORLD_SIZE=.. MASTER_ADDR=.. MASTER_PORT=.. /usr/bin/python3 bench/torch_ddp_hosts.py BATCH STEPS WARMUP"""
import json, os, sys, time
import torch, torch.distributed as dist

B, steps, warmup = (int(a) for a in sys.argv[1:4])
dist.init_process_group("gloo")
rank, W = dist.get_rank(), dist.get_world_size()
torch.set_num_threads(1)
torch.manual_seed(0)
m = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256), torch.nn.ReLU(), torch.nn.Linear(256, 10))
dm = torch.nn.parallel.DistributedDataParallel(m)
opt = torch.optim.Adam(dm.parameters(), lr=1e-3)
X = torch.rand(B // W, 784)
y = torch.randint(0, 10, (B // W,))
loss_fn = torch.nn.CrossEntropyLoss()

def step():
    opt.zero_grad()
    loss_fn(dm(X), y).backward()
    opt.step()

for _ in range(warmup):
    step()
dist.barrier()
t = time.perf_counter()
for _ in range(steps):
    step()
dist.barrier()
dt = time.perf_counter() - t
if rank == 0:
    print(json.dumps({"samplesPerSec": steps * B / dt, "stepMs": dt / steps * 1e3}))
dist.destroy_process_group()
