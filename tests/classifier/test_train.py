import json

import pytest
import torch

from hpacell.classifier.model import create_model, load_checkpoint
from hpacell.classifier.training.config import TrainConfig
from hpacell.classifier.training.lr_finder import lr_find
from hpacell.classifier.training.train import fit

CFG = dict(model="resnet18", batch_size=8, embedding_dim=16, num_workers=0, warmup_epochs=1, lr=2e-3)


def _losses(run):
    return [
        (r["train_loss"], r["val_loss"])
        for r in map(json.loads, (run / "metrics.jsonl").read_text().split("\n")[:-1])
    ]


def test_one_epoch_end_to_end_outputs(tmp_path, make_data):
    summary = fit(make_data(), TrainConfig(epochs=1, **CFG), tmp_path)
    for f in ("best.pt", "last.pt", "metrics.jsonl", "curves.png", "summary.json"):
        assert (tmp_path / f).is_file(), f
    ckpt = torch.load(tmp_path / "best.pt", weights_only=True)
    assert ckpt["classes"] == ["a", "b", "c"] and len(ckpt["thresholds"]) == 3 and ckpt["epoch"] == 0
    assert ckpt["config"]["model"] == "resnet18" and ckpt["crop_size"] == 32
    rec = json.loads((tmp_path / "metrics.jsonl").read_text())
    for k in (
        "train_bce",
        "train_triplet",
        "train_loss",
        "val_loss",
        "val_macro_f1",
        "val_per_class_f1",
        "val_map",
    ):
        assert k in rec
    assert rec["val_targets"] == "inherited_image_labels"
    assert summary["best_epoch"] == 0 and "baseline" in summary
    model, ck = load_checkpoint(tmp_path / "best.pt")
    assert not model.training
    assert model(torch.zeros(1, 4, 32, 32))["logits"].shape == (1, 3)
    with pytest.raises(FileExistsError, match="resume"):
        fit(make_data(), TrainConfig(epochs=1, **CFG), tmp_path)


def test_seeded_runs_are_identical_on_cpu(tmp_path, make_data):
    cfg = TrainConfig(epochs=1, limit_train_batches=3, **CFG)
    fit(make_data(), cfg, tmp_path / "a")
    fit(make_data(), cfg, tmp_path / "b")
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")


def test_resume_after_kill_matches_uninterrupted(tmp_path, make_data):
    cfg = TrainConfig(epochs=2, limit_train_batches=3, ema_decay=0.9, **CFG)

    def kill_after_first(epoch, rec):
        if epoch == 0:
            raise KeyboardInterrupt("simulated kill")

    with pytest.raises(KeyboardInterrupt):
        fit(make_data(), cfg, tmp_path / "killed", hooks=[kill_after_first])
    assert len(_losses(tmp_path / "killed")) == 1
    epochs_run = []
    fit(make_data(), cfg, tmp_path / "killed", resume=True, hooks=[lambda e, r: epochs_run.append(e)])
    assert epochs_run == [1]
    fit(make_data(), cfg, tmp_path / "full")
    assert _losses(tmp_path / "killed") == _losses(tmp_path / "full")
    assert torch.load(tmp_path / "killed" / "last.pt", weights_only=True)["epoch"] == 1


def test_cell_truth_targets_and_warmup_freezes_backbone(tmp_path, make_data):
    data = make_data()
    data.val_truth = data.val_labels.copy()
    data.val_truth[:, 0] = 1
    cfg = TrainConfig(epochs=1, limit_train_batches=2, **CFG)
    before = create_model("resnet18", 3, embedding_dim=16)
    torch.manual_seed(0)
    fit(data, cfg, tmp_path)
    rec = json.loads((tmp_path / "metrics.jsonl").read_text())
    assert rec["val_targets"] == "cell_truth" and rec["backbone_frozen"] and rec["lr_backbone"] == 0.0
    # the frozen backbone's weights equal a freshly seeded model's
    ck = torch.load(tmp_path / "last.pt", weights_only=True)
    torch.manual_seed(cfg.seed)
    ref = create_model("resnet18", 3, embedding_dim=16).state_dict()
    assert torch.equal(ck["model"]["backbone.layer1.0.conv1.weight"], ref["backbone.layer1.0.conv1.weight"])
    assert torch.equal(ck["model"]["backbone.bn1.running_mean"], ref["backbone.bn1.running_mean"])
    del before


def test_lr_finder_restores_model(tmp_path, make_data):
    data = make_data()
    cfg = TrainConfig(lr_find_steps=20, lr_find_min=1e-5, lr_find_max=1.0, **CFG)
    model = create_model("resnet18", 3, embedding_dim=16)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    res = lr_find(model, data, cfg, tmp_path)
    assert (tmp_path / "lr_find.png").is_file() and (tmp_path / "lr_find.json").is_file()
    assert 5 <= res["steps_run"] <= 20 and res["lrs"][0] == pytest.approx(1e-5)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("schedule", ["cosine", "onecycle", "cyclic", "constant"])
@pytest.mark.parametrize("steps", [1, 2, 3, 50])
def test_schedules_step_through_tiny_and_normal_runs(schedule, steps):
    from hpacell.classifier.training.train import make_scheduler

    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1e-3)
    sched = make_scheduler(opt, TrainConfig(schedule=schedule, epochs=1), steps)
    lrs = []
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    assert all(0 <= lr <= 1e-3 + 1e-12 for lr in lrs)


def test_gpu_defaults_autotune_cudnn_unless_deterministic_is_asked():
    from hpacell.classifier.training.train import seed_everything, wants_deterministic

    cpu, cuda = torch.device("cpu"), torch.device("cuda", 0)
    assert wants_deterministic(TrainConfig(), cpu) and not wants_deterministic(TrainConfig(), cuda)
    assert wants_deterministic(TrainConfig(deterministic=True), cuda)
    assert not wants_deterministic(TrainConfig(deterministic=False), cpu)
    try:
        seed_everything(0, deterministic=False)
        assert torch.backends.cudnn.benchmark and not torch.are_deterministic_algorithms_enabled()
        seed_everything(0, deterministic=True)
        assert not torch.backends.cudnn.benchmark and torch.backends.cudnn.deterministic
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        seed_everything(0, deterministic=True)


# --------------------------------------------------------------------------- resume rules (issue 13)
def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


def test_resume_with_another_model_is_refused_before_anything_changes(tmp_path, make_data):
    """Case 3: a resume changes nothing on disk until last.pt and the new options agree."""
    from hpacell.utils.errors import InputError

    cfg = dict(CFG, epochs=1, limit_train_batches=2)
    fit(make_data(), TrainConfig(**cfg), tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(InputError, match=r"last\.pt: --resume cannot change model 'resnet18' -> 'resnet34'"):
        fit(make_data(), TrainConfig(**{**cfg, "model": "resnet34", "epochs": 2}), tmp_path, resume=True)
    with pytest.raises(InputError, match="embedding_dim 16 -> 32"):
        fit(make_data(), TrainConfig(**{**cfg, "embedding_dim": 32, "epochs": 2}), tmp_path, resume=True)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    ckpt = torch.load(tmp_path / "last.pt", weights_only=True)
    (tmp_path / "two").mkdir()
    torch.save({**ckpt, "epoch": 1}, tmp_path / "two" / "last.pt")  # as if 2 epochs were finished
    with pytest.raises(InputError, match="finished 2 epochs; --epochs 1 is fewer"):
        fit(make_data(), TrainConfig(**cfg), tmp_path / "two", resume=True)


def test_resume_applies_a_new_lr_and_rebuilds_the_schedule_for_more_epochs(tmp_path, make_data):
    """Case 7: cosine epoch 1 does not start at lr 0; a new --lr is applied; onecycle may be lengthened."""
    cfg = dict(CFG, warmup_epochs=0, limit_train_batches=2)
    fit(make_data(), TrainConfig(epochs=1, **cfg), tmp_path / "cos")
    fit(make_data(), TrainConfig(epochs=2, **{**cfg, "lr": 4e-3}), tmp_path / "cos", resume=True)
    recs = _records(tmp_path / "cos")
    # the cosine schedule now spans 2 epochs of 2 steps at the new peak 4e-3: halfway it is at 2e-3
    assert recs[1]["lr_head"] == pytest.approx(2e-3, rel=1e-6) and recs[1]["lr_backbone"] > 0
    assert torch.load(tmp_path / "cos" / "last.pt", weights_only=True)["config"]["lr"] == 4e-3
    cyc = dict(cfg, schedule="onecycle")
    fit(make_data(), TrainConfig(epochs=1, **cyc), tmp_path / "one")
    fit(make_data(), TrainConfig(epochs=3, **cyc), tmp_path / "one", resume=True)  # was "Tried to step"
    assert [r["epoch"] for r in _records(tmp_path / "one")] == [0, 1, 2]


def test_fewer_training_cells_than_one_batch_still_train(tmp_path, make_data):
    """Case 8: 36 training cells with batch 64 make one batch (drop_last only with full batches)."""
    from hpacell.utils.errors import InputError

    data = make_data()
    assert len(data.train) < 64
    fit(data, TrainConfig(epochs=1, **{**CFG, "batch_size": 64}), tmp_path / "a")
    rec = _records(tmp_path / "a")[0]
    assert rec["train_batches"] == 1 and rec["train_loss"] == rec["train_loss"]  # not NaN
    one = make_data()
    one.train = one.train.subset(one.train.rows[:1], one.train.transform)
    one.train_labels = one.train_labels[:1]
    with pytest.raises(InputError, match="make no batch"):
        fit(one, TrainConfig(epochs=1, **CFG), tmp_path / "b")
    assert not (tmp_path / "b" / "best.pt").exists()


def test_a_kill_between_last_pt_and_metrics_loses_no_epoch(tmp_path, make_data, monkeypatch):
    """Case 11: the epoch record and the checkpoint agree after any kill; "best" is the best epoch's."""
    from hpacell.classifier.training import train as T

    cfg = TrainConfig(epochs=3, limit_train_batches=2, **CFG)
    save = T.save_checkpoint

    def killed_after_last_pt(path, state):
        out = save(path, state)
        if path.name == "last.pt" and state["epoch"] == 1:
            raise KeyboardInterrupt("killed after last.pt, before metrics.jsonl")
        return out

    monkeypatch.setattr(T, "save_checkpoint", killed_after_last_pt)
    with pytest.raises(KeyboardInterrupt):
        fit(make_data(), cfg, tmp_path)
    monkeypatch.setattr(T, "save_checkpoint", save)
    summary = fit(make_data(), cfg, tmp_path, resume=True)
    recs = _records(tmp_path)
    assert [r["epoch"] for r in recs] == [0, 1, 2]
    best = next(r for r in recs if r["epoch"] == summary["best_epoch"])
    assert summary["best"]["epoch"] == summary["best_epoch"]
    assert summary["best"]["val_map"] == best["val_map"] and summary["best"]["val_loss"] == best["val_loss"]
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == summary["best_epoch"]


def test_a_kill_between_last_pt_and_best_pt_is_repaired_by_the_resume(tmp_path, make_data, monkeypatch):
    """best.pt is written after last.pt; a resume whose last.pt is the best epoch rewrites best.pt."""
    from hpacell.classifier.training import train as T

    cfg = TrainConfig(epochs=1, limit_train_batches=2, **CFG)
    save = T.save_checkpoint

    def killed_before_best_pt(path, state):
        if path.name == "best.pt":
            raise KeyboardInterrupt("killed after last.pt, before best.pt")
        return save(path, state)

    monkeypatch.setattr(T, "save_checkpoint", killed_before_best_pt)
    with pytest.raises(KeyboardInterrupt):
        fit(make_data(), cfg, tmp_path)
    monkeypatch.setattr(T, "save_checkpoint", save)
    assert not (tmp_path / "best.pt").exists()
    summary = fit(make_data(), cfg, tmp_path, resume=True)
    assert summary["best_epoch"] == 0
    assert torch.load(tmp_path / "best.pt", weights_only=True)["epoch"] == 0


def test_fit_leaves_only_the_process_group_it_joined(tmp_path):
    """teardown_distributed destroys a group setup_distributed made, never one the caller made."""
    import torch.distributed as dist

    from hpacell.classifier.training.train import DistInfo, teardown_distributed

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'pg'}", rank=0, world_size=1)
    try:
        teardown_distributed(DistInfo())  # the caller's group: it stays
        assert dist.is_initialized()
        teardown_distributed(DistInfo(owns_group=True))
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
