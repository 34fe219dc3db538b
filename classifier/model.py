"""The cell classifier: a timm backbone with 4 input channels and a custom head.

``model(images, features=None)`` returns ``{"logits": (B, C), "embedding": (B, E)}``.
The head is: pooling (avg+max concatenated, or GeM) -> optional concatenation
of per-cell feature columns -> BatchNorm -> dropout -> linear embedding (E) ->
BatchNorm + ReLU -> linear to the classes. The triplet loss works on the
embedding.

ImageNet weights (``pretrained``) come from a local state-dict file
(:func:`load_pretrained`) or, by name (``"imagenet"`` or a timm tag such as
``"resnet50.a1_in1k"``), through timm's own pretrained mechanism and the Hugging Face
hub cache (:func:`timm_pretrained_state_dict`): downloaded once when online, read from
the cache when ``HF_HUB_OFFLINE`` is set. Either way the RGB first convolution gets
the 4th (yellow) input (:func:`adapt_first_conv`). Loading a checkpoint never
downloads anything.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import timm
import torch
import torch.nn.functional as F
from torch import nn

from hpacell.utils.errors import InputError

log = logging.getLogger(__name__)


class CheckpointError(InputError):
    """A file that is not the checkpoint or weights it was given as; the message names the file."""


class PretrainedError(InputError):
    """Named pretrained weights that cannot be had (unknown tag, offline and not cached, no network)."""


CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.fc.", "last_linear.")
FOURTH_CHANNEL = {"red": 0, "green": 1, "blue": 2}


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.clamp(min=self.eps).pow(self.p).mean((-2, -1)).pow(1.0 / self.p)


class AvgMaxPool(nn.Module):
    """Global average and max pooling, concatenated (2F outputs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean((-2, -1)), x.amax((-2, -1))], 1)


class CellClassifier(nn.Module):
    """Backbone (feature map) + pooling + embedding + classifier.

    Examples
    --------
    >>> m = create_model("resnet18", num_classes=3, embedding_dim=16).eval()
    >>> out = m(torch.zeros(2, 4, 64, 64))
    >>> tuple(out["logits"].shape), tuple(out["embedding"].shape)
    ((2, 3), (2, 16))
    """

    def __init__(
        self,
        backbone: nn.Module,
        num_classes: int,
        pool: str = "avgmax",
        embedding_dim: int = 512,
        dropout: float = 0.3,
        n_features: int = 0,
    ) -> None:
        super().__init__()
        self.backbone = backbone
        nf = backbone.num_features
        if pool == "avgmax":
            self.pool: nn.Module = AvgMaxPool()
            pooled = 2 * nf
        elif pool == "gem":
            self.pool = GeM()
            pooled = nf
        else:
            raise InputError(f"unknown pool {pool!r} (avgmax or gem)")
        self.n_features = n_features
        self.bn = nn.BatchNorm1d(pooled + n_features)
        self.dropout = nn.Dropout(dropout)
        self.embed = nn.Linear(pooled + n_features, embedding_dim)
        self.embed_bn = nn.BatchNorm1d(embedding_dim)
        self.classifier = nn.Linear(embedding_dim, num_classes)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters outside the backbone (trained during the warm-up)."""
        ids = {id(p) for p in self.backbone.parameters()}
        return [p for p in self.parameters() if id(p) not in ids]

    def forward(self, images: torch.Tensor, features: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        x = self.pool(self.backbone.forward_features(images)).float()
        if self.n_features:
            if features is None:
                raise ValueError(f"model expects {self.n_features} cell features, got none")
            x = torch.cat([x, features.float()], 1)
        emb = self.embed(self.dropout(self.bn(x)))
        logits = self.classifier(F.relu(self.embed_bn(emb)))
        return {"logits": logits, "embedding": emb}


def create_model(
    name: str = "resnet50",
    num_classes: int = 19,
    in_chans: int = 4,
    pretrained: str | os.PathLike | None = None,
    pool: str = "avgmax",
    embedding_dim: int = 512,
    dropout: float = 0.3,
    n_features: int = 0,
    fourth_channel_init: str = "red",
) -> CellClassifier:
    """Build a :class:`CellClassifier` around the timm backbone ``name``.

    ``pretrained`` is a local ImageNet state-dict file (:func:`load_pretrained`), or
    ``"imagenet"`` (timm's default weights of ``name``) or a timm tag of the same
    architecture (``"resnet50.a1_in1k"``, or just ``"a1_in1k"``), fetched by
    :func:`timm_pretrained_state_dict`.
    """
    try:
        backbone = timm.create_model(name, pretrained=False, in_chans=in_chans, num_classes=0)
    except RuntimeError as e:  # timm: "Unknown model"
        raise InputError(f"unknown timm model {name!r}: {e}") from None
    if pretrained is not None:
        tag = pretrained_tag(name, pretrained)
        if tag is None:
            load_pretrained(backbone, pretrained, fourth_channel_init=fourth_channel_init)
        else:
            _load_backbone_state(backbone, timm_pretrained_state_dict(tag), tag, fourth_channel_init)
    return CellClassifier(backbone, num_classes, pool, embedding_dim, dropout, n_features)


# --------------------------------------------------------------------------- pretrained weights by name
def pretrained_tag(model: str, pretrained: str | os.PathLike) -> str | None:
    """The timm name (``arch.tag``) that ``pretrained`` names for ``model``; None for a local file.

    An existing path is a file. ``"imagenet"`` (or the model's own name) is timm's default
    pretrained tag of ``model`` (or the tag ``model`` itself carries); ``"arch.tag"`` or a bare
    ``"tag"`` of ``model``'s architecture name timm weights. Anything else is taken as a file name.

    Raises
    ------
    PretrainedError
        For ``"imagenet"`` on a model without timm weights, or a tag of another architecture.

    Examples
    --------
    >>> pretrained_tag("resnet18", "imagenet"), pretrained_tag("resnet18", "tv_in1k")
    ('resnet18.a1_in1k', 'resnet18.tv_in1k')
    >>> pretrained_tag("resnet18", "weights/resnet18.pth") is None
    True
    """
    from timm.models import get_pretrained_cfg, split_model_name_tag

    spec = str(pretrained)
    if isinstance(pretrained, os.PathLike) or Path(spec).exists():
        return None
    arch, own_tag = split_model_name_tag(model)

    def cfg(full: str) -> Any:
        try:
            return get_pretrained_cfg(full)
        except RuntimeError:  # timm: invalid tag for the architecture
            return None

    if spec in ("imagenet", arch, model):
        found = cfg(model)
        if found is None:
            raise PretrainedError(
                f"--pretrained {spec}: timm has no pretrained weights for {model!r}; "
                "pass a local weights file (--pretrained FILE)"
            )
        return f"{arch}.{own_tag or found.tag}"
    other, tag = split_model_name_tag(spec)
    if tag and cfg(spec) is not None and "/" not in spec:
        if other != arch:
            raise PretrainedError(f"--pretrained {spec}: weights of {other!r}, but the model is {arch!r}")
        return spec
    if not tag and cfg(f"{arch}.{spec}") is not None:
        return f"{arch}.{spec}"
    return None


def _hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as the environment says now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in {"1", "ON", "YES", "TRUE"}


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub`` (``~/.cache/huggingface/hub``)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.environ["HF_HUB_CACHE"])).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    home = os.environ.get("HF_HOME") or os.path.join(xdg, "huggingface")
    return Path(os.path.expandvars(home)).expanduser() / "hub"


def _cached_weights(cfg: Any, cache: Path) -> str | None:
    """The cached weights file of a timm pretrained cfg (HF hub cache, or torch hub for URLs)."""
    from huggingface_hub import try_to_load_from_cache

    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        names = [cfg.hf_hub_filename] if cfg.hf_hub_filename else ["model.safetensors", "pytorch_model.bin"]
        for filename in names:
            found = try_to_load_from_cache(repo, filename, cache_dir=cache, revision=revision or None)
            if isinstance(found, str):
                return found
        return None
    if cfg.url:
        path = Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(cfg.url.split("?")[0])
        return str(path) if path.is_file() else None
    return None


def timm_pretrained_state_dict(tag: str) -> dict[str, torch.Tensor]:
    """The ImageNet backbone weights timm has for ``tag`` (``arch.tag``), as a 3-channel state dict.

    timm's own mechanism loads them (its download, cache and checkpoint filters). Online,
    files are downloaded once into the Hugging Face hub cache (:func:`hub_cache_dir`);
    with ``HF_HUB_OFFLINE`` set, only the cache is read and nothing is downloaded.

    Raises
    ------
    PretrainedError
        Offline and not cached, or the download failed; the message says what to do.
    """
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(tag)
    cache = hub_cache_dir()
    kwargs: dict[str, Any] = {"cache_dir": cache} if cfg.hf_hub_id else {}
    if _hub_offline():
        found = _cached_weights(cfg, cache)
        if found is None:
            raise PretrainedError(
                f"--pretrained {tag}: HF_HUB_OFFLINE is set and the weights are not in the cache {cache}; "
                "pass a local weights file (--pretrained FILE), or unset HF_HUB_OFFLINE to download them once"
            )
        kwargs = {"pretrained_cfg_overlay": {"file": found}}
    try:
        source = timm.create_model(tag, pretrained=True, num_classes=0, **kwargs)
    except Exception as e:  # network, hub or file errors of the download: the user's environment
        reason = (str(e).strip().splitlines() or [""])[0]
        raise PretrainedError(
            f"--pretrained {tag}: cannot get timm's weights ({type(e).__name__}: {reason}); "
            "check the network, or pass a local weights file (--pretrained FILE)"
        ) from e
    log.info("pretrained %s from timm (cache %s)", tag, kwargs.get("pretrained_cfg_overlay", cache))
    return source.state_dict()


def _load_file(path: Path, what: str, hint: str = "") -> Any:
    """``torch.load(weights_only=True)`` on CPU; a failure is one line naming the file and what it is not."""
    if not path.is_file():
        raise FileNotFoundError(f"{path}: {what} not found{hint}")
    if path.stat().st_size == 0:
        raise CheckpointError(f"{path}: not a {what} (an empty file, 0 bytes)")
    with open(path, "rb") as f:
        head = f.read(4)
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many types, with multi-line advice we do not want to repeat
        raise CheckpointError(f"{path}: not a {what} ({_unreadable(head, e)})") from None


def _unreadable(head: bytes, error: Exception) -> str:
    """Why ``torch.load`` failed, in a few words (the file's first bytes tell a zip/pickle from junk)."""
    import re

    text = str(error)
    found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", text)
    if found:
        return f"a pickled Python object, {found.group(1)}, not only tensors and plain values"
    if head.startswith(b"PK\x03\x04"):
        return "a damaged or truncated PyTorch file"
    if head[:1] == b"\x80":
        return "a pickle that torch.load(weights_only=True) cannot read"
    return "not a PyTorch file"


def _unwrap(sd: Any, path: Path) -> dict[str, torch.Tensor]:
    for key in ("state_dict_ema", "state_dict", "model"):
        if isinstance(sd, dict) and isinstance(sd.get(key), dict):
            sd = sd[key]
            break
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise CheckpointError(f"{path}: not a state dict (expected a mapping of tensor names to tensors)")
    return {k.removeprefix("module.").removeprefix("backbone."): v for k, v in sd.items()}


def adapt_first_conv(weight: torch.Tensor, in_chans: int, fourth: str = "red") -> torch.Tensor:
    """Map a 3-channel (RGB) conv weight to ``in_chans`` channels.

    Channels 0-2 keep the RGB filters; channel 3 (yellow) copies the filters of
    ``fourth`` (red, green or blue), or their mean.

    Examples
    --------
    >>> w = torch.arange(3.0).view(1, 3, 1, 1)
    >>> adapt_first_conv(w, 4, "green").flatten().tolist()
    [0.0, 1.0, 2.0, 1.0]
    """
    if weight.shape[1] == in_chans:
        return weight
    if weight.shape[1] != 3 or in_chans != 4:
        raise InputError(f"cannot map a {weight.shape[1]}-channel conv to {in_chans} channels")
    if fourth == "mean":
        extra = weight.mean(1, keepdim=True)
    elif fourth in FOURTH_CHANNEL:
        extra = weight[:, FOURTH_CHANNEL[fourth] : FOURTH_CHANNEL[fourth] + 1]
    else:
        raise InputError(f"fourth_channel_init must be red, green, blue or mean, not {fourth!r}")
    return torch.cat([weight, extra], 1)


def load_pretrained(backbone: nn.Module, path: str | os.PathLike, fourth_channel_init: str = "red") -> None:
    """Load a local timm/torchvision ImageNet state dict into ``backbone``.

    Accepts bare state dicts or ones wrapped in ``state_dict``/``model``;
    drops classifier weights; adapts 3-channel input convs to the backbone's
    channel count. Raises ``FileNotFoundError`` / ``ValueError`` naming the file.
    """
    path = Path(path)
    hint = " (nor 'imagenet' or a timm pretrained tag of the model)"
    sd = _unwrap(_load_file(path, "pretrained weights file", hint), path)
    _load_backbone_state(backbone, sd, str(path), fourth_channel_init)


def _load_backbone_state(
    backbone: nn.Module, sd: dict[str, torch.Tensor], source: str, fourth_channel_init: str
) -> None:
    """Copy the matching tensors of ``sd`` into ``backbone`` (first conv adapted, classifier dropped)."""
    own = backbone.state_dict()
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        if k.startswith(CLASSIFIER_PREFIXES) or k not in own:
            continue
        if v.ndim == 4 and own[k].ndim == 4 and v.shape[1] != own[k].shape[1]:
            v = adapt_first_conv(v, own[k].shape[1], fourth_channel_init)
        if v.shape != own[k].shape:
            raise CheckpointError(
                f"{source}: {k} has shape {tuple(v.shape)}, the model wants {tuple(own[k].shape)}"
            )
        out[k] = v
    if not out:
        raise CheckpointError(f"{source}: no parameter names match the backbone (wrong architecture?)")
    missing = [k for k in own if k not in out]
    if missing:
        log.warning("%s: %d backbone tensors not in the file, e.g. %s", source, len(missing), missing[:3])
    backbone.load_state_dict(out, strict=False)
    log.info("loaded %d pretrained tensors from %s", len(out), source)


def model_from_config(
    config: dict[str, Any], num_classes: int, n_features: int = 0, in_chans: int = 4
) -> CellClassifier:
    """Build the (untrained) model described by a resolved train config dict."""
    return create_model(
        config["model"],
        num_classes=num_classes,
        in_chans=in_chans,
        pool=config.get("pool", "avgmax"),
        embedding_dim=config.get("embedding_dim", 512),
        dropout=config.get("dropout", 0.3),
        n_features=n_features,
    )


CHECKPOINT_KINDS = {
    "cells": "a cell classifier checkpoint (hpacell train-cells; scored with hpacell predict)",
    "images": "an image-level checkpoint (hpacell train-images; scored with hpacell predict-images)",
}


def checkpoint_kind(config: dict[str, Any]) -> str:
    """``"images"`` for a train-images run config (it has ``channels``), else ``"cells"``.

    Examples
    --------
    >>> checkpoint_kind({"model": "resnet18"}), checkpoint_kind({"model": "resnet18", "channels": ["green"]})
    ('cells', 'images')
    """
    return "images" if "channels" in config else "cells"


def _is_state_dict(obj: Any) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def read_checkpoint(path: str | os.PathLike, kind: str | None = None) -> dict[str, Any]:
    """The dict of an hpacell checkpoint (``best.pt``/``last.pt``), on the CPU.

    Loads with ``weights_only=True`` (only tensors and plain Python types) and
    checks the parts every reader relies on (``model`` state dict, ``config``
    with a ``model`` name, ``classes``, ``crop_size``, ``thresholds``). With
    ``kind`` (``"cells"`` or ``"images"``) a checkpoint of the other kind is refused.

    Raises
    ------
    FileNotFoundError, CheckpointError
        Naming the file: missing, unreadable, not an hpacell checkpoint, or of the other kind.
    """
    path = Path(path)
    ckpt = _load_file(path, "checkpoint")
    what = "an hpacell checkpoint (best.pt/last.pt of hpacell train-cells or train-images)"
    if isinstance(ckpt, torch.Tensor):
        raise CheckpointError(f"{path}: a bare tensor, not {what}")
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: a {type(ckpt).__name__}, not {what}")
    if _is_state_dict(ckpt) or _is_state_dict(ckpt.get("state_dict")):
        raise CheckpointError(
            f"{path}: bare model weights (a state dict without config and classes), not {what}; "
            "ImageNet weights go to --pretrained"
        )
    missing = [k for k in ("model", "config", "classes", "crop_size") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: no {', '.join(map(repr, missing))} in it: not {what}")
    problem = _checkpoint_problem(ckpt)
    if problem:
        raise CheckpointError(f"{path}: {problem}: not {what}")
    if kind is not None:
        found = ckpt.get("kind") or checkpoint_kind(ckpt["config"])
        if found != kind:
            raise CheckpointError(
                f"{path}: {CHECKPOINT_KINDS[found]}, not {CHECKPOINT_KINDS[kind].split(' (')[0]}"
            )
    return ckpt


def _checkpoint_problem(ckpt: dict[str, Any]) -> str | None:
    """What is wrong with the parts of a loaded checkpoint dict, or ``None``."""
    config, classes = ckpt["config"], ckpt["classes"]
    if not _is_state_dict(ckpt["model"]):
        return "its 'model' is not a state dict of tensors"
    if ckpt.get("ema") is not None and not _is_state_dict(ckpt["ema"]):
        return "its 'ema' is not a state dict of tensors"
    if not isinstance(config, dict) or not isinstance(config.get("model"), str):
        return "its 'config' has no backbone name ('model')"
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        return "its 'classes' is not a list of class names"
    if isinstance(ckpt["crop_size"], bool) or not isinstance(ckpt["crop_size"], int) or ckpt["crop_size"] < 1:
        return f"its 'crop_size' ({ckpt['crop_size']!r}) is not a positive integer"
    thr = ckpt.get("thresholds")
    if thr is not None and (
        not isinstance(thr, list)
        or len(thr) != len(classes)
        or not all(isinstance(t, float | int) for t in thr)
    ):
        return f"its 'thresholds' are not {len(classes)} numbers (one per class)"
    if not isinstance(ckpt.get("feature_columns") or [], list):
        return "its 'feature_columns' is not a list"
    if not isinstance(ckpt.get("in_chans", 4), int):
        return "its 'in_chans' is not an integer"
    if ckpt.get("kind") is not None and ckpt["kind"] not in CHECKPOINT_KINDS:
        return f"unknown kind {ckpt['kind']!r}"
    return None


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", kind: str | None = None
) -> tuple[nn.Module, dict]:
    """Load ``best.pt``/``last.pt``: ``(model in eval mode, checkpoint dict)``.

    Uses the EMA weights when the checkpoint has them; ``kind`` as in :func:`read_checkpoint`.
    """
    ckpt = read_checkpoint(path, kind)
    try:
        model = model_from_config(
            ckpt["config"],
            len(ckpt["classes"]),
            len(ckpt.get("feature_columns") or []),
            in_chans=int(ckpt.get("in_chans", 4)),
        )
    except InputError as e:
        raise CheckpointError(f"{path}: {e}") from None
    weights = ckpt["ema"] if ckpt.get("ema") else ckpt["model"]
    try:
        model.load_state_dict(weights)
    except RuntimeError:
        raise CheckpointError(f"{path}: {weight_mismatch(model, weights, ckpt['config'])}") from None
    return model.to(device).eval(), ckpt


def weight_mismatch(model: nn.Module, weights: dict[str, torch.Tensor], config: dict[str, Any]) -> str:
    """One line on why ``weights`` do not fit ``model`` (missing/unexpected names, other shapes)."""
    own = model.state_dict()
    missing = [k for k in own if k not in weights]
    extra = [k for k in weights if k not in own]
    shapes = [k for k in own if k in weights and own[k].shape != weights[k].shape]
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing (e.g. {missing[0]})")
    if extra:
        parts.append(f"{len(extra)} unexpected (e.g. {extra[0]})")
    if shapes:
        k = shapes[0]
        parts.append(f"{len(shapes)} of another shape (e.g. {k} {tuple(weights[k].shape)})")
    return f"its weights do not fit a {config.get('model')} model: {', '.join(parts) or 'mismatch'}"
