"""Score a Kaggle 2021 submission against per-cell ground truth: mAP at IoU 0.6 and image-level F1.

TRUTH is a folder with masks/<ID>_cellmask.png + cells.csv (ID,cell,Label), as `hpacell synth` writes,
or a CSV ID,ImageWidth,ImageHeight,cell,Label,mask (mask = base64(zlib(COCO RLE)) as in the submission).
mAP is the organisers' (Open Images) rule: detections of a class that is not among the image's true labels
are ignored; mAP_strict counts them as false positives. --match mask (default) compares masks, Kaggle's
stated leaderboard metric; --match box compares each mask's enclosing box, the organisers' published
re-scoring. Every row is checked first (a bad one: one-line error naming it, exit 1). Prints a per-class
table, the confusion per label, the mode and, as the last line, mAP=<value>.
"""

from __future__ import annotations

import json
from pathlib import Path

import typer

from hpacell.workflows.options import Match, MatchMode


def command(
    submission: Path = typer.Argument(
        ..., help="submission.csv (ID,ImageWidth,ImageHeight,PredictionString)."
    ),
    truth: Path = typer.Option(..., "--truth", "-t", help="Truth folder (masks/ + cells.csv) or truth CSV."),
    threshold: float = typer.Option(
        0.5,
        "--threshold",
        min=0.0,
        max=1.0,
        help="Image label = class with a detection at >= this confidence.",
    ),
    json_path: Path = typer.Option(None, "--json", help="Write every figure as JSON here."),
    report: Path = typer.Option(None, "--report", help="Write PR curves and per-class AP bars (PNG) here."),
    taxonomy: str = typer.Option("hpa2021", "--taxonomy", help="Class set of the truth labels."),
    match: Match = MatchMode.mask,
) -> None:
    from hpacell.cellcrops.labels import get_taxonomy
    from hpacell.classifier.scoring.evaluate import evaluate, read_truth
    from hpacell.classifier.scoring.submission import read_submission
    from hpacell.utils.files import atomic_write_bytes

    tax = get_taxonomy(taxonomy)
    sub = read_submission(submission, n_classes=len(tax.classes))
    result = evaluate(sub, read_truth(truth, tax), tax.classes, threshold, match=MatchMode(match).value)
    for note in result.notes:
        typer.echo(f"note: {note}", err=True)
    if json_path is not None:
        atomic_write_bytes(json_path, json.dumps(result.summary(), indent=2).encode())
    if report is not None:
        from hpacell.classifier.scoring.report import plot_ap_bars, plot_pr_curves

        plot_pr_curves(result, report / "pr_curves.png")
        plot_ap_bars(result, report / "ap_per_class.png")
    typer.echo(result.table())
    typer.echo(f"mAP={result.map:.6f}")
