"""DDP triplet mining over all ranks (2 gloo processes on CPU) differs from per-rank mining.

Each rank holds cells of one class only, so per-rank mining finds no negatives (loss 0); gathered
mining pairs every anchor with the other rank's cells, so the loss is the single-process loss of the
global batch, and gradients reach the other rank's embeddings.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import textwrap

import pytest
import torch

from hpacell.classifier.training.losses import triplet_loss

# rank 0: two class-A cells; rank 1: two class-B cells close to them (hard negatives)
EMB = [[[1.0, 0.0], [0.9, 0.3]], [[0.95, 0.1], [0.8, 0.4]]]
LAB = [[[1.0, 0.0], [1.0, 0.0]], [[0.0, 1.0], [0.0, 1.0]]]

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from hpacell.classifier.training.losses import triplet_loss

    rank = int(os.environ["RANK"])
    dist.init_process_group("gloo", rank=rank, world_size=2)
    emb = torch.tensor(json.loads(sys.argv[1])[rank], requires_grad=True)
    lab = torch.tensor(json.loads(sys.argv[2])[rank])
    local = triplet_loss(emb, lab, margin=0.3, gather=False).item()
    gathered = triplet_loss(emb, lab, margin=0.3, gather=True)
    gathered.backward()  # every rank calls backward: the all_gather sends gradients back
    print(json.dumps({"local": local, "gathered": gathered.item(), "grad": emb.grad.abs().sum().item()}))
    dist.barrier()
    dist.destroy_process_group()
    # skip interpreter shutdown: a gloo worker thread that frees a tensor during it aborts the process
    # ("terminate called without an active exception", pytorch/pytorch#190489; ~1 run in 4 here)
    sys.stdout.flush()
    os._exit(0)
    """
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_gathered_mining_changes_the_loss_versus_per_rank(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(_free_port()), "WORLD_SIZE": "2"}
    env["OMP_NUM_THREADS"] = "1"
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), json.dumps(EMB), json.dumps(LAB)],
            env={**env, "RANK": str(r)},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for r in range(2)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-3000:]
        results.append(json.loads(out.strip().splitlines()[-1]))
    assert [r["local"] for r in results] == [0.0, 0.0]  # one class per rank: no negatives to mine
    assert all(r["gathered"] > 0.1 for r in results)
    assert all(r["grad"] > 0 for r in results)
    # per-rank means of the gathered loss over equal batches = the loss of the whole global batch
    whole = triplet_loss(torch.tensor(EMB).flatten(0, 1), torch.tensor(LAB).flatten(0, 1), margin=0.3)
    assert sum(r["gathered"] for r in results) / 2 == pytest.approx(whole.item(), rel=1e-5)
