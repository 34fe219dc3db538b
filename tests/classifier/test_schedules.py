"""LR schedules by shape: where they rise, where they peak, how they end (not only their bounds)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from hpacell.classifier.training.config import TrainConfig
from hpacell.classifier.training.train import make_scheduler

PEAK = 1e-3


def _lrs(schedule: str, steps: int, epochs: int = 1) -> np.ndarray:
    """The LR of each of ``steps`` optimizer steps, then the one after the last step."""
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=PEAK)
    sched = make_scheduler(opt, TrainConfig(schedule=schedule, epochs=epochs), steps)
    out = []
    for _ in range(steps):
        out.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    out.append(opt.param_groups[0]["lr"])
    return np.array(out)


def test_cosine_falls_monotonically_from_the_peak_to_zero():
    lr = _lrs("cosine", 50)
    assert lr[0] == pytest.approx(PEAK)
    assert np.all(np.diff(lr) < 0)  # strictly decreasing every step
    assert lr[-1] == pytest.approx(0.0, abs=1e-12)  # ends at eta_min
    assert lr[25] == pytest.approx(PEAK / 2, rel=1e-6)  # half-way: half the peak (a cosine, not a line)
    assert lr[12] > PEAK * (1 - 12 / 50)  # above the straight line early on


def test_onecycle_warms_up_to_the_peak_at_pct_start_then_anneals():
    lr = _lrs("onecycle", 50)[:-1]  # pct_start 0.2: the peak is reached at step 0.2 * 50 - 1 = 9
    top = int(np.argmax(lr))
    assert top == 9 and lr[top] == pytest.approx(PEAK)
    assert np.all(np.diff(lr[: top + 1]) > 0)  # the warm-up rises every step
    assert np.all(np.diff(lr[top:]) < 0)  # then it falls every step
    assert lr[0] == pytest.approx(PEAK / 25)  # starts at max_lr / div_factor
    assert lr[-1] == pytest.approx(PEAK / 25 / 1e4, rel=1e-3)  # the last step: initial / final_div_factor


def test_onecycle_tiny_runs_still_rise_then_fall():
    lr = _lrs("onecycle", 3)[:-1]  # pct_start stretched to 0.5: up one step, down one step
    assert lr[0] < lr[1] > lr[2]
    assert PEAK / 2 < lr[1] < PEAK  # the warm-up ends between steps, so 3 steps peak below the peak LR


def test_cyclic_triangles_halve_their_height():
    lr = _lrs("cyclic", 48, epochs=4)  # half-cycle = 48 // 8 = 6 steps
    base = PEAK / 10
    assert lr[0] == pytest.approx(base)
    peaks = [i for i in range(1, 48) if lr[i - 1] < lr[i] > lr[i + 1]]
    assert peaks == [6, 18, 30, 42]
    heights = (lr[peaks] - base) / (PEAK - base)
    assert heights == pytest.approx([1, 0.5, 0.25, 0.125])
    assert lr[[12, 24, 36]] == pytest.approx([base] * 3)  # back to the base between cycles


def test_constant_is_constant():
    assert np.all(_lrs("constant", 10) == PEAK)
