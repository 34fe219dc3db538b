"""The device resolver under each launcher layout, with a fake GPU count (no GPU needed).

torch sees as many GPUs as ``CUDA_VISIBLE_DEVICES`` lists; the fixture fakes exactly that, so each case
sets the variables SLURM or torchrun would set and checks the device a rank ends up on.
"""

from __future__ import annotations

import pytest
import torch

from hpacell.utils.device import cpus_per_process, default_workers, local_rank, resolve_device
from hpacell.utils.errors import InputError

LAUNCH_VARS = (
    "CUDA_VISIBLE_DEVICES",
    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE",
    "SLURM_LOCALID",
    "SLURM_PROCID",
    "SLURM_NTASKS",
    "SLURM_CPUS_PER_TASK",
)


@pytest.fixture
def launch(monkeypatch):
    """``launch(**env)``: a clean launcher environment; torch's GPU count follows CUDA_VISIBLE_DEVICES."""
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)

    def visible() -> int:
        import os

        ids = os.environ.get("CUDA_VISIBLE_DEVICES")
        return 0 if not ids else len(ids.split(","))

    monkeypatch.setattr(torch.cuda, "device_count", visible)

    def set_env(**env: str) -> None:
        for k, v in env.items():
            monkeypatch.setenv(k, v)

    return set_env


def test_no_gpu_auto_is_cpu_and_cuda_is_an_error(launch):
    launch()
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(InputError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_single_process_one_gpu(launch):
    launch(CUDA_VISIBLE_DEVICES="0")
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.parametrize("localid", ["0", "1", "3"])
def test_srun_gpus_per_task_each_rank_uses_its_only_gpu(launch, localid):
    # srun --ntasks-per-node 4 --gpus-per-task 1: task k sees only its own GPU (physical id k)
    launch(CUDA_VISIBLE_DEVICES=localid, SLURM_LOCALID=localid, SLURM_PROCID=localid, SLURM_NTASKS="4")
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("auto") == torch.device("cuda", 0)


@pytest.mark.parametrize("localid", [0, 1, 3])
def test_srun_gpus_per_node_rank_picks_its_gpu(launch, localid):
    # srun --ntasks-per-node 4 --gpus-per-node 4: every task sees all four
    launch(CUDA_VISIBLE_DEVICES="0,1,2,3", SLURM_LOCALID=str(localid), SLURM_NTASKS="8")
    assert resolve_device("cuda") == torch.device("cuda", localid)


def test_torchrun_local_rank_wins_over_slurm_localid(launch):
    # srun --ntasks-per-node 1 torchrun --nproc_per_node 4: SLURM_LOCALID is 0 for the whole node
    launch(CUDA_VISIBLE_DEVICES="0,1,2,3", SLURM_LOCALID="0", LOCAL_RANK="2", LOCAL_WORLD_SIZE="4")
    assert resolve_device("auto") == torch.device("cuda", 2)


def test_more_ranks_than_gpus_share_them(launch, caplog):
    launch(CUDA_VISIBLE_DEVICES="0,1", LOCAL_RANK="3")
    assert resolve_device("cuda") == torch.device("cuda", 1)
    assert "shares" in caplog.text


def test_explicit_index(launch):
    launch(CUDA_VISIBLE_DEVICES="4,5", LOCAL_RANK="0")
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    with pytest.raises(InputError, match="only 2 CUDA GPU"):
        resolve_device("cuda:2")
    with pytest.raises(InputError, match="expected auto, cpu, cuda"):
        resolve_device("gpu")


def test_local_rank_and_cpus(launch):
    launch()
    assert local_rank() == 0
    assert cpus_per_process() >= 1
    launch(SLURM_LOCALID="2", SLURM_CPUS_PER_TASK="1")
    assert local_rank() == 2
    assert cpus_per_process() == 1
    assert default_workers() == 1
    launch(LOCAL_RANK="5", SLURM_CPUS_PER_TASK="16", LOCAL_WORLD_SIZE="4")
    assert local_rank() == 5
    assert cpus_per_process() == 4
    assert default_workers(limit=8) == 4
