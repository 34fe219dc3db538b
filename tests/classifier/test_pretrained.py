"""--pretrained by name: timm's mechanism and the Hugging Face cache, never a download in tests."""

from __future__ import annotations

import socket

import pytest
import timm
import torch
from safetensors.torch import save_file

from hpacell.classifier.model import PretrainedError, create_model, hub_cache_dir, pretrained_tag


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1, an empty HF_HOME, and no network at all (a connect is a test failure)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.delenv("HF_HUB_CACHE", raising=False)

    def no_network(*args, **kwargs):
        raise AssertionError("a test tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", no_network)
    return tmp_path / "hf" / "hub"


def test_names_resolve_to_timm_tags(tmp_path):
    assert pretrained_tag("resnet18", "imagenet") == "resnet18.a1_in1k"  # timm's default tag
    assert pretrained_tag("resnet18", "resnet18") == "resnet18.a1_in1k"
    assert pretrained_tag("resnet18.tv_in1k", "imagenet") == "resnet18.tv_in1k"  # the model's own tag
    assert pretrained_tag("resnet18", "resnet18.tv_in1k") == pretrained_tag("resnet18", "tv_in1k")
    assert pretrained_tag("resnet18", "weights/resnet18.pth") is None  # a file name
    (tmp_path / "imagenet").write_bytes(b"")
    assert pretrained_tag("resnet18", tmp_path / "imagenet") is None  # an existing file wins
    with pytest.raises(PretrainedError, match="weights of 'resnet50', but the model is 'resnet18'"):
        pretrained_tag("resnet18", "resnet50.a1_in1k")


def test_offline_and_not_cached_says_what_to_do(offline):
    assert hub_cache_dir() == offline
    with pytest.raises(PretrainedError) as info:
        create_model("resnet18", num_classes=3, pretrained="imagenet")
    msg = str(info.value)
    assert "\n" not in msg and "resnet18.a1_in1k" in msg and str(offline) in msg
    assert "HF_HUB_OFFLINE" in msg and "--pretrained FILE" in msg


@pytest.mark.parametrize("fourth,src", [("red", 0), ("blue", 2)])
def test_offline_reads_the_hub_cache_and_adapts_the_stem(offline, fourth, src):
    # lay out the HF cache as huggingface_hub does: refs/main -> snapshots/<rev>/model.safetensors
    ref = timm.create_model("resnet18", pretrained=False)  # stand-in ImageNet weights, 3 channels + fc
    repo = offline / "models--timm--resnet18.a1_in1k"
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text("0" * 40)
    snap = repo / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in ref.state_dict().items()}, str(snap / "model.safetensors"))
    m = create_model("resnet18", num_classes=3, pretrained="imagenet", fourth_channel_init=fourth)
    w, w0 = m.backbone.conv1.weight.detach(), ref.conv1.weight.detach()
    assert w.shape[1] == 4 and torch.equal(w[:, :3], w0) and torch.equal(w[:, 3], w0[:, src])
    assert torch.equal(m.backbone.layer4[1].conv2.weight, ref.layer4[1].conv2.weight)


def test_training_passes_the_name_through(offline, tmp_path, make_data):
    from hpacell.classifier.training.config import TrainConfig
    from hpacell.classifier.training.train import fit
    from hpacell.utils.errors import HpacellError

    cfg = TrainConfig(model="resnet18", pretrained="imagenet", epochs=1, batch_size=8, num_workers=0)
    with pytest.raises(PretrainedError, match="HF_HUB_OFFLINE") as info:
        fit(make_data(), cfg, tmp_path / "run")
    assert isinstance(info.value, HpacellError)  # the CLI prints it in one line and exits 1
