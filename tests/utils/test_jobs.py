import time

from hpacell.utils.jobs import run_jobs


def _slow_first(i: int) -> int:
    if i == 3:
        raise ValueError("bad item 3")
    time.sleep(0.2 if i == 0 else 0.01)
    return i * i


def test_failures_are_recorded_and_the_rest_go_on():
    results = list(run_jobs(_slow_first, range(6), workers=1))
    assert [r.item for r in results] == list(range(6))
    bad = [r for r in results if not r.ok]
    assert len(bad) == 1 and bad[0].item == 3 and "ValueError: bad item 3" in bad[0].error
    assert [r.value for r in results if r.ok] == [0, 1, 4, 16, 25]


def test_parallel_unordered_and_ordered():
    unordered = [r.item for r in run_jobs(_slow_first, range(8), workers=2)]
    assert sorted(unordered) == list(range(8))
    assert unordered != list(range(8))  # item 0 is slow: others finish first
    ordered = list(run_jobs(_slow_first, range(8), workers=2, ordered=True))
    assert [r.item for r in ordered] == list(range(8))
    assert ordered[3].error and ordered[2].value == 4


class _Bar:
    totals: list = []

    def __init__(self, total=None, **kwargs):
        _Bar.totals.append(total)

    def update(self, n=1):
        pass

    def close(self):
        pass


def test_progress_total_from_len_or_given(monkeypatch, tmp_path):
    import hpacell.utils.jobs as jobs
    from hpacell.cellcrops.synth import make_synth_dataset

    monkeypatch.setattr(jobs, "tqdm", _Bar)
    _Bar.totals = []
    list(run_jobs(_slow_first, [1, 2, 4]))  # a list is sized (before it is turned into an iterator)
    list(run_jobs(_slow_first, (i for i in (1, 2)), total=2))  # a generator needs the total
    list(run_jobs(_slow_first, (i for i in (1, 2))))
    assert _Bar.totals == [3, 2, None]
    _Bar.totals = []
    make_synth_dataset(tmp_path, 2, 64, seed=0, cell_scale=0.2)  # synth's bar knows its total
    assert _Bar.totals == [2]


def test_workers_forked_after_torch_ran_on_threads_do_not_hang():
    """GNU OpenMP hangs in a forked child of a process that used its thread pool (seen with the
    hpacellseg CPU backend after other torch work in the same process): workers compute on one thread."""
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        """
        import torch
        from hpacell.utils.jobs import run_jobs

        def conv(seed):
            x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(seed))
            return float(torch.nn.functional.pad(x, (2, 2, 2, 2), mode="replicate").sum())

        if __name__ == "__main__":
            torch.set_num_threads(2)
            conv(0)  # the parent's OpenMP pool is now up
            assert all(r.ok for r in run_jobs(conv, range(4), workers=2)), "a job failed"
            print("ok")
        """
    )
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
    assert res.returncode == 0 and res.stdout.strip() == "ok", res.stderr[-2000:]
