"""Training: Rank-N-Contrast (two stages), the L1 baseline, checkpoints, resume and DDP.

``train_rnc`` trains the encoder with :class:`brainage.models.losses.RnCLoss` on two random
views of each scan (stage ``rnc_encoder``), then freezes it and fits the linear regressor with
an L1 loss on the encoder's features (stage ``rnc_head``); ``train_l1`` trains the same network
end to end with an L1 loss (stage ``l1``). Ages are normalised with the training mean and
standard deviation (:class:`brainage.models.network.BrainAgeModel` stores both), and the model
of the epoch with the lowest validation MAE is kept as ``best.pt``.

Run folder (``out_dir``)::

    <stage>_last.pt   state after the last finished epoch: model, optimiser, scheduler, RNG states,
                      history, best MAE; training resumes from it
    best.pt           the selected model (state dict + metadata), read by :func:`load_model`
    log.csv           stage, epoch, train_loss, val_mae, lr, seconds

Exact resume: the data order (``DistributedSampler`` seeded with ``seed`` and the epoch) and the
augmentations (:func:`brainage.models.augment.view_seed` of seed, epoch and index) are functions
of the seed and the epoch, and the checkpoint also holds the torch, numpy and Python RNG states;
a run interrupted after any epoch and resumed reaches the same weights as an uninterrupted one
(CPU).

Under ``torchrun --nproc_per_node=K`` the same functions train with DDP: each process loads
its shard of every batch, and for the RNC loss the features of all processes are gathered
(``torch.distributed.nn.functional.all_gather``, which keeps gradients) so that the contrast set
is the global batch. On CUDA, forward passes run under bf16 autocast and in channels-last
memory format; the CPU stays in float32.

References
----------
.. [1] Zha, K., Cao, P., Son, J., Yang, Y., Katabi, D. (2023). Rank-N-Contrast: Learning
   Continuous Representations for Regression. NeurIPS 2023. arXiv:2210.01189.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import platform
import random
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
import torch.distributed as dist
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, DistributedSampler
from tqdm.auto import tqdm

from brainage._utils import (
    CHECKPOINT_FILE,
    check_choice,
    check_int,
    check_number,
    dataclass_from_dict,
    package_versions,
)
from brainage.models.augment import AugmentConfig, RandomViews, view_seed
from brainage.models.checkpoint import CHECKPOINT_FORMAT, read_checkpoint, write_checkpoint
from brainage.models.datasets import VolumeDataset
from brainage.models.losses import RnCLoss
from brainage.models.network import BrainAgeModel, ModelConfig, build_model

logger = logging.getLogger(__name__)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "encode",
    "gather_views",
    "load_model",
    "predict",
    "resolve_device",
    "train_l1",
    "train_permuted_age_model",
    "train_rnc",
]

LOG_COLUMNS = ("stage", "epoch", "train_loss", "val_mae", "lr", "seconds")
_OPTIMIZERS = ("sgd", "adamw")
_SCHEDULES = ("cosine", "constant")
#: TrainConfig fields that do not change the trained weights: free to differ on resume.
_RESUME_FREE = ("num_workers", "progress", "resume", "eval_batch_size", "device")


# --- configuration ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainConfig:
    """Settings of a training run.

    Parameters
    ----------
    epochs : int, default=10
        Epochs of the RNC encoder stage and of the end-to-end L1 baseline.
    head_epochs : int, default=100
        Epochs of the linear head (RNC stage 2) on the frozen encoder's cached features.
    batch_size : int, default=16
        Global batch size (scans; the RNC loss contrasts ``2 * batch_size`` views); split evenly
        over DDP processes.
    eval_batch_size : int, default=16
        Batch size of feature extraction and validation (per process).
    optimizer : {"sgd", "adamw"}, default="adamw"
        AdamW, or SGD with momentum as in the reference (Zha et al.: SGD, lr 0.5, momentum
        0.9, weight decay 1e-4, batch 256, cosine). On the simulated 4 mm cohort (140 training
        scans, 12 epochs, batch 16) SGD at lr 0.05 stayed at the mean predictor where AdamW at
        lr 1e-3 reached a validation MAE of about 8.5 years.
    lr : float, default=1e-3
        Peak learning rate of the encoder stage and of the L1 baseline.
    head_lr : float, default=0.01
        Peak learning rate of the linear head (RNC stage 2).
    momentum : float, default=0.9
        SGD momentum.
    weight_decay : float, default=1e-4
        Weight decay (decoupled for AdamW).
    schedule : {"cosine", "constant"}, default="cosine"
        Learning-rate schedule over the steps of a stage (cosine down to ``lr * 1e-3``).
    temperature : float, default=2.0
        Temperature of the RNC loss.
    probe_every : int, default=1
        In the RNC encoder stage, fit a ridge probe on the training features every this many
        epochs and log its validation MAE (0: never; costs a forward pass over both sets).
    seed : int, default=0
        Seeds initialisation, data order and augmentations.
    num_workers : int, default=0
        DataLoader worker processes.
    device : str, default="auto"
        "auto" (CUDA if available, else CPU), "cpu", "cuda", "cuda:1", ...
    amp : bool, default=True
        bf16 autocast on CUDA (ignored on CPU).
    channels_last : bool, default=True
        channels-last-3d memory format on CUDA (ignored on CPU).
    sync_batchnorm : bool, default=True
        Synchronise batch norm across DDP processes on CUDA.
    augment : AugmentConfig or None, default=AugmentConfig()
        Augmentations of the training scans; None turns them off.
    progress : bool, default=True
        Show tqdm progress bars (main process only).
    resume : bool, default=True
        Continue from ``<stage>_last.pt`` in ``out_dir`` when present.
    init_from : str or None, default=None
        A checkpoint (``best.pt`` or ``<stage>_last.pt`` of an earlier run) whose encoder
        weights start this run instead of a random initialisation: fine-tuning a pretrained
        encoder (e.g. the simulated cohort's) on a small real cohort. Only the encoder is
        taken; the head starts afresh with this run's age normalisation. Its model
        configuration must equal ``model_cfg``.
    """

    epochs: int = 10
    head_epochs: int = 100
    batch_size: int = 16
    eval_batch_size: int = 16
    optimizer: str = "adamw"
    lr: float = 1e-3
    head_lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 1e-4
    schedule: str = "cosine"
    temperature: float = 2.0
    probe_every: int = 1
    seed: int = 0
    num_workers: int = 0
    device: str = "auto"
    amp: bool = True
    channels_last: bool = True
    sync_batchnorm: bool = True
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    progress: bool = True
    resume: bool = True
    init_from: str | None = None

    def __post_init__(self) -> None:
        for name, low in (("epochs", 0), ("head_epochs", 0), ("batch_size", 1),
                          ("eval_batch_size", 1), ("probe_every", 0), ("seed", 0),
                          ("num_workers", 0)):
            check_int(f"TrainConfig.{name}", getattr(self, name), low=low)
        for name in ("lr", "head_lr", "temperature"):
            check_number(f"TrainConfig.{name}", getattr(self, name), low=0, low_open=True)
        for name in ("momentum", "weight_decay"):
            check_number(f"TrainConfig.{name}", getattr(self, name), low=0)
        check_choice("TrainConfig.optimizer", self.optimizer, _OPTIMIZERS)
        check_choice("TrainConfig.schedule", self.schedule, _SCHEDULES)
        if not isinstance(self.device, str):
            raise TypeError(f"TrainConfig.device must be a string, "
                            f"got {type(self.device).__name__}")
        if isinstance(self.init_from, os.PathLike):
            object.__setattr__(self, "init_from", os.fspath(self.init_from))
        if self.init_from is not None and not (isinstance(self.init_from, str)
                                               and self.init_from):
            raise TypeError(f"TrainConfig.init_from must be a checkpoint path or None, "
                            f"got {self.init_from!r}")
        if isinstance(self.augment, Mapping):
            object.__setattr__(self, "augment", AugmentConfig(**self.augment))
        if self.augment is not None and not isinstance(self.augment, AugmentConfig):
            raise TypeError(f"TrainConfig.augment must be an AugmentConfig, a mapping or None, "
                            f"got {type(self.augment).__name__}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dictionary for checkpoints and JSON."""
        out = asdict(self)
        out["augment"] = None if self.augment is None else self.augment.to_dict()
        return out

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainConfig:
        """Build from a mapping (a profile, checkpoint metadata); unknown keys are errors."""
        return dataclass_from_dict(cls, values)


@dataclass
class TrainResult:
    """What a training call returns.

    Attributes
    ----------
    best_checkpoint : Path
        ``best.pt``, the model of the epoch with the lowest validation MAE.
    last_checkpoints : dict of str to Path
        The last checkpoint of each stage.
    history : pandas.DataFrame
        One row per epoch, columns ``LOG_COLUMNS`` (``val_mae`` in years; NaN where not evaluated).
    best_val_mae : float
        Validation MAE of the selected model, years.
    best_epoch : int
        Its epoch (1-based) within its stage.
    seconds_per_epoch : dict of str to float
        Mean wall time of an epoch, per stage.
    """

    best_checkpoint: Path
    last_checkpoints: dict[str, Path]
    history: pd.DataFrame
    best_val_mae: float
    best_epoch: int
    seconds_per_epoch: dict[str, float]


# --- data ---------------------------------------------------------------------------------------


class _SeededDataset(Dataset):
    """Wrap a dataset: each item carries the seed of its views, (seed, epoch, index).

    The views themselves are drawn per batch on the training device
    (:meth:`RandomViews.batch`), each sample from its own seed, so they do not depend on the
    batch it lands in, the number of processes or a resume.
    """

    def __init__(self, base: Dataset, seed: int) -> None:
        self.base, self.seed, self.epoch = base, seed, 0

    def __len__(self) -> int:
        return len(self.base)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = self.base[index]
        return {"image": item["image"], "age": torch.tensor(float(item["age"])), "index": index,
                "seed": torch.tensor(view_seed(self.seed, self.epoch, index), dtype=torch.int64)}


def _dataset_ages(dataset: Dataset, name: str) -> np.ndarray:
    """Ages of a dataset, without loading images when it exposes ``ages``."""
    if not hasattr(dataset, "__len__") or len(dataset) == 0:
        raise ValueError(f"{name} must be a non-empty dataset of dicts with 'image' and 'age'")
    ages = getattr(dataset, "ages", None)
    if ages is None:
        ages = [float(dataset[i]["age"]) for i in range(len(dataset))]
    return np.asarray(ages, dtype=np.float64).reshape(-1)


# --- devices and processes ----------------------------------------------------------------------


@dataclass(frozen=True)
class _Run:
    """Where this process trains: device, DDP rank and world size, output folder."""

    device: torch.device
    rank: int
    world_size: int
    out_dir: Path
    cfg: TrainConfig

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def resolve_device(spec: str = "auto", local_rank: int = 0) -> torch.device:
    """Turn "auto", "cpu", "cuda", "cuda:1", "mps" into a device; "auto" picks CUDA when present.

    Under DDP a bare "cuda" (or "auto") means the process's ``local_rank`` GPU.
    """
    if spec in ("auto", "cuda"):
        if torch.cuda.is_available():
            return torch.device("cuda", local_rank % torch.cuda.device_count())
        if spec == "cuda":
            raise ValueError("device 'cuda' was requested but torch.cuda.is_available() is False")
        return torch.device("cpu")
    try:
        device = torch.device(spec)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device must be 'auto', 'cpu', 'cuda', 'cuda:N' or another torch "
                         f"device, got {spec!r}") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {spec!r} was requested but torch.cuda.is_available() is False")
    return device


def _setup_run(cfg: TrainConfig, out_dir: str | Path) -> _Run:
    """Join the DDP group started by torchrun (if any), pick the device, create ``out_dir``."""
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"train_cfg must be a TrainConfig, got {type(cfg).__name__}")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if dist.is_available() and not dist.is_initialized() and world > 1:
        device = resolve_device(cfg.device, local_rank)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    distributed = dist.is_available() and dist.is_initialized()
    rank = dist.get_rank() if distributed else 0
    world = dist.get_world_size() if distributed else 1
    device = resolve_device(cfg.device, local_rank if distributed else 0)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if cfg.batch_size % world:
        raise ValueError(f"TrainConfig.batch_size ({cfg.batch_size}) must be divisible by the "
                         f"number of DDP processes ({world})")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    return _Run(device=device, rank=rank, world_size=world, out_dir=out, cfg=cfg)


def _autocast(run: _Run) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA when enabled; float32 elsewhere."""
    if run.cuda and run.cfg.amp:
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def _to_device(images: Tensor, run: _Run) -> Tensor:
    images = images.to(run.device, non_blocking=True)
    if run.cuda and run.cfg.channels_last:
        images = images.contiguous(memory_format=torch.channels_last_3d)
    return images


def gather_views(features: Tensor, labels: Tensor) -> tuple[Tensor, Tensor]:
    """Concatenate the features and labels of all DDP processes (identity without DDP).

    Parameters
    ----------
    features : Tensor, shape (B, 2, D)
        This process's two-view features; gradients flow back to them.
    labels : Tensor, shape (B,)
        This process's labels.

    Returns
    -------
    tuple of Tensor, shapes (K * B, 2, D) and (K * B,)
        Rank-ordered global batch. ``torch.distributed.nn.functional.all_gather`` sums the
        gradients of all K processes' (identical) losses back to each shard, and DDP's average
        divides by K, so the parameters receive the gradient of the global-batch loss.
    """
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return features, labels
    from torch.distributed.nn.functional import all_gather

    shards = all_gather(features.contiguous())  # K x (B, 2, D)
    all_features = torch.cat(shards, dim=0)  # K x (B, 2, D) -> (KB, 2, D)
    label_list = [torch.empty_like(labels) for _ in range(dist.get_world_size())]
    dist.all_gather(label_list, labels.contiguous())
    return all_features, torch.cat(label_list)  # K x (B,) -> (KB,)


# --- loaders and forward passes -----------------------------------------------------------------


def _train_loader(dataset: Dataset, run: _Run, epoch: int) -> DataLoader:
    """Shuffled loader of this process's shard for ``epoch`` (order from seed and epoch)."""
    per_rank = run.cfg.batch_size // run.world_size
    sampler = DistributedSampler(dataset, num_replicas=run.world_size, rank=run.rank,
                                 shuffle=True, seed=run.cfg.seed, drop_last=True)
    sampler.set_epoch(epoch)
    if len(sampler) < per_rank:
        raise ValueError(f"the training set has {len(dataset)} scans, {len(sampler)} per process, "
                         f"fewer than one batch (batch_size={run.cfg.batch_size})")
    generator = torch.Generator().manual_seed(view_seed(run.cfg.seed, epoch, 0))
    return DataLoader(dataset, batch_size=per_rank, sampler=sampler, drop_last=True,
                      num_workers=run.cfg.num_workers, generator=generator,
                      pin_memory=run.cuda)


@torch.no_grad()
def _sharded_forward(fn: Callable[[Tensor], Tensor], dataset: Dataset, run: _Run) -> Tensor:
    """Apply ``fn`` to every image of ``dataset`` (split over processes); (N, ...) on the CPU."""
    sampler = DistributedSampler(dataset, num_replicas=run.world_size, rank=run.rank,
                                 shuffle=False, drop_last=False)
    loader = DataLoader(dataset, batch_size=run.cfg.eval_batch_size, sampler=sampler,
                        num_workers=run.cfg.num_workers, pin_memory=run.cuda)
    outputs, indices = [], torch.tensor(list(iter(sampler)), dtype=torch.long)
    for batch in loader:
        with _autocast(run):
            outputs.append(fn(_to_device(batch["image"], run)).float())
    local = torch.cat(outputs)  # (n_local, ...)
    if run.world_size > 1:  # padded shards have equal length: gather, then undo the padding
        gathered = [torch.empty_like(local) for _ in range(run.world_size)]
        dist.all_gather(gathered, local)
        index_list = [torch.empty_like(indices.to(local.device)) for _ in range(run.world_size)]
        dist.all_gather(index_list, indices.to(local.device))
        local, indices = torch.cat(gathered), torch.cat(index_list).cpu()
    result = torch.empty((len(dataset), *local.shape[1:]), dtype=local.dtype)
    result[indices] = local.cpu()
    return result


def predict(model: BrainAgeModel, dataset: Dataset, batch_size: int = 8,
            device: str = "auto", num_workers: int = 0) -> np.ndarray:
    """Predicted ages (years) of every scan in ``dataset``, in dataset order.

    Parameters
    ----------
    model : BrainAgeModel
        A trained model (:func:`load_model`); put in eval mode.
    dataset : Dataset
        Items with an ``"image"`` (C, D, H, W).
    batch_size : int, default=8
        Scans per forward pass.
    device : str, default="auto"
        Where to run; see :func:`resolve_device`.
    num_workers : int, default=0
        DataLoader workers.

    Returns
    -------
    numpy.ndarray, shape (N,)
    """
    return _evaluate(model, dataset, batch_size, device, num_workers, features=False)


def encode(model: BrainAgeModel, dataset: Dataset, batch_size: int = 8,
           device: str = "auto", num_workers: int = 0) -> np.ndarray:
    """The encoder's features (the learned representation) of every scan, in dataset order.

    Same parameters as :func:`predict`. Used to measure what the representation holds besides
    age, e.g. the acquisition site (OpenBHB's debiasing score).

    Returns
    -------
    numpy.ndarray, shape (N, D)
        ``D`` is the model's ``feature_dim``.
    """
    return _evaluate(model, dataset, batch_size, device, num_workers, features=True)


def _evaluate(model: BrainAgeModel, dataset: Dataset, batch_size: int, device: str,
              num_workers: int, *, features: bool) -> np.ndarray:
    if not isinstance(model, BrainAgeModel):
        raise TypeError(f"model must be a BrainAgeModel, got {type(model).__name__}")
    cfg = TrainConfig(eval_batch_size=batch_size, num_workers=num_workers, device=device)
    run = _Run(device=resolve_device(device), rank=0, world_size=1, out_dir=Path("."), cfg=cfg)
    model.to(run.device).eval()
    fn = model.encoder if features else model
    return _sharded_forward(fn, dataset, run).numpy().astype(np.float64)


# --- optimisation and checkpoints ---------------------------------------------------------------


def _optimizer(params: Iterator[nn.Parameter], cfg: TrainConfig,
               lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(params, lr=lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.AdamW(params, lr=lr, weight_decay=cfg.weight_decay)


def _scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, total_steps: int,
               lr: float) -> torch.optim.lr_scheduler.LRScheduler:
    if cfg.schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=max(total_steps, 1), eta_min=lr * 1e-3)
    return torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)


def _rng_state() -> dict[str, Any]:
    """Global RNG states as plain tensors and Python types (loadable with weights_only=True)."""
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {"kind": str(kind), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "python": random.getstate(),
    }


def _set_rng_state(state: Mapping[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    np_state = state["numpy"]
    np.random.set_state((np_state["kind"], np_state["keys"].numpy().astype(np.uint32),
                         np_state["pos"], np_state["has_gauss"], np_state["cached"]))
    random.setstate(state["python"])


def _versions() -> dict[str, str]:
    versions = package_versions(("brainage", "torch", "monai", "numpy"))
    return {**{k: str(v) for k, v in versions.items()}, "python": platform.python_version()}


def _plain_state(module: nn.Module) -> dict[str, Tensor]:
    """A CPU copy of a state dict (DDP and SyncBatchNorm wrappers leave the keys unchanged)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


def _check_resumable(payload: Mapping[str, Any], model_cfg: ModelConfig, cfg: TrainConfig,
                     path: Path) -> None:
    """Raise ValueError naming the settings that differ between a checkpoint and this run."""
    saved_train = {k: v for k, v in payload["train_config"].items() if k not in _RESUME_FREE}
    now_train = {k: v for k, v in cfg.to_dict().items() if k not in _RESUME_FREE}
    diffs = [f"train_cfg.{k}: {saved_train.get(k)!r} -> {now_train.get(k)!r}"
             for k in sorted(set(saved_train) | set(now_train))
             if saved_train.get(k) != now_train.get(k)]
    diffs += [f"model_cfg.{k}: {v!r} -> {model_cfg.to_dict().get(k)!r}"
              for k, v in payload["model_config"].items() if model_cfg.to_dict().get(k) != v]
    if diffs:
        raise ValueError(f"cannot resume from {path}: settings differ ({'; '.join(diffs)}). "
                         f"Use another out_dir or TrainConfig(resume=False).")


def load_model(checkpoint_path: str | Path, device: str = "cpu") -> BrainAgeModel:
    """Rebuild the :class:`BrainAgeModel` saved in a checkpoint (``best.pt`` or ``*_last.pt``).

    Parameters
    ----------
    checkpoint_path : str or Path
        A file written by :func:`train_rnc` or :func:`train_l1`; read with
        ``torch.load(weights_only=True)``.
    device : str, default="cpu"
        Where to put the model; see :func:`resolve_device`.

    Returns
    -------
    BrainAgeModel
        In eval mode, predicting years.
    """
    payload = read_checkpoint(checkpoint_path)
    if payload.get("stage") == "rnc_encoder":
        raise ValueError(f"checkpoint {checkpoint_path} holds an RNC encoder without a trained "
                         f"head (stage 'rnc_encoder'); load best.pt or rnc_head_last.pt")
    missing = [k for k in ("model_config", "model", "age_mean", "age_scale") if k not in payload]
    if missing:
        raise ValueError(f"checkpoint {checkpoint_path} lacks the field(s) {missing}: it was not "
                         f"written by brainage.models.train (or was edited)")
    for key in ("age_mean", "age_scale"):
        value = payload[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(
                value) or (key == "age_scale" and not value > 0):
            wanted = "a finite number > 0" if key == "age_scale" else "a finite number"
            raise ValueError(f"checkpoint {checkpoint_path}: field {key!r} must be {wanted}; "
                             f"got {value!r}"[:300])
    try:
        model = build_model(ModelConfig.from_dict(payload["model_config"]),
                            float(payload["age_mean"]), float(payload["age_scale"]))
        model.load_state_dict(payload["model"])
    except (TypeError, ValueError, KeyError, RuntimeError, AttributeError) as err:
        detail = " ".join(str(err).split())[:500]
        raise ValueError(f"checkpoint {checkpoint_path}: its model_config and weights do not "
                         f"build a model: {type(err).__name__}: {detail}") from err
    for key in ("age_mean", "age_scale"):  # the weights carry their own copy of both
        value = float(getattr(model, key))
        if not math.isfinite(value) or (key == "age_scale" and not value > 0):
            raise ValueError(f"checkpoint {checkpoint_path}: the weights' buffer {key!r} is "
                             f"{value!r}; it must be finite (and > 0 for age_scale)")
    return model.to(resolve_device(device)).eval()


# --- the stage loop -----------------------------------------------------------------------------


@dataclass
class _Tracker:
    """History and model selection shared by the stages of one training call."""

    history: list[dict[str, Any]] = field(default_factory=list)
    best_val_mae: float = math.inf
    best_epoch: int = 0
    best_stage: str = ""


@dataclass
class _Stage:
    """One optimisation stage: what it trains and how one epoch runs and is evaluated."""

    name: str
    epochs: int
    model: BrainAgeModel
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    run_epoch: Callable[[int], float]
    evaluate: Callable[[int], float]
    selects_best: bool


def _metadata(model: BrainAgeModel, model_cfg: ModelConfig, cfg: TrainConfig) -> dict[str, Any]:
    return {"format": CHECKPOINT_FORMAT, "model_config": model_cfg.to_dict(),
            "train_config": cfg.to_dict(), "age_mean": float(model.age_mean),
            "age_scale": float(model.age_scale), "versions": _versions()}


def _save_epoch(stage: _Stage, run: _Run, model_cfg: ModelConfig, tracker: _Tracker,
                epoch: int, improved: bool) -> None:
    """Write ``<stage>_last.pt``, ``best.pt`` if the model improved, and ``log.csv`` (rank 0)."""
    if not run.is_main:
        return
    meta = _metadata(stage.model, model_cfg, run.cfg)
    state = _plain_state(stage.model)
    if improved:
        write_checkpoint({**meta, "stage": stage.name, "epoch": epoch, "model": state,
                           "best_val_mae": tracker.best_val_mae}, run.out_dir / CHECKPOINT_FILE)
    write_checkpoint({
        **meta, "stage": stage.name, "epoch": epoch, "epochs": stage.epochs, "model": state,
        "optimizer": stage.optimizer.state_dict(), "scheduler": stage.scheduler.state_dict(),
        "rng": _rng_state(), "history": [dict(row) for row in tracker.history],
        "best_val_mae": tracker.best_val_mae, "best_epoch": tracker.best_epoch,
        "best_stage": tracker.best_stage,
    }, run.out_dir / f"{stage.name}_last.pt")
    pd.DataFrame(tracker.history, columns=list(LOG_COLUMNS)).to_csv(
        run.out_dir / "log.csv", index=False)


def _resume(stage: _Stage, run: _Run, model_cfg: ModelConfig, tracker: _Tracker) -> int:
    """Restore a stage from ``<stage>_last.pt`` if allowed and present; return the next epoch."""
    path = run.out_dir / f"{stage.name}_last.pt"
    if not (run.cfg.resume and path.exists()):
        return 0
    payload = read_checkpoint(path)
    _check_resumable(payload, model_cfg, run.cfg, path)
    stage.model.load_state_dict(payload["model"])
    stage.optimizer.load_state_dict(payload["optimizer"])
    stage.scheduler.load_state_dict(payload["scheduler"])
    _set_rng_state(payload["rng"])
    tracker.history = [dict(row) for row in payload["history"]]
    tracker.best_val_mae = float(payload["best_val_mae"])
    tracker.best_epoch = int(payload["best_epoch"])
    tracker.best_stage = str(payload["best_stage"])
    logger.info("resumed %s from %s after epoch %d", stage.name, path, payload["epoch"])
    return int(payload["epoch"])


def _run_stage(stage: _Stage, run: _Run, model_cfg: ModelConfig, tracker: _Tracker) -> None:
    """Train ``stage`` from its last checkpoint (if any) to its last epoch, saving every epoch."""
    for epoch in range(_resume(stage, run, model_cfg, tracker), stage.epochs):
        start = time.perf_counter()
        lr = float(stage.optimizer.param_groups[0]["lr"])
        train_loss = stage.run_epoch(epoch)
        val_mae = stage.evaluate(epoch)
        seconds = time.perf_counter() - start
        tracker.history.append({"stage": stage.name, "epoch": epoch + 1, "train_loss": train_loss,
                                "val_mae": val_mae, "lr": lr, "seconds": seconds})
        improved = stage.selects_best and val_mae < tracker.best_val_mae
        if improved:
            tracker.best_val_mae, tracker.best_epoch, tracker.best_stage = (
                val_mae, epoch + 1, stage.name)
        _save_epoch(stage, run, model_cfg, tracker, epoch + 1, improved)
        logger.info("%s epoch %d/%d: train_loss %.4f, val_mae %.3f, %.1f s", stage.name,
                    epoch + 1, stage.epochs, train_loss, val_mae, seconds)


def _progress(loader: DataLoader, run: _Run, desc: str) -> Any:
    return tqdm(loader, desc=desc, leave=False, disable=not (run.cfg.progress and run.is_main))


# --- stages -------------------------------------------------------------------------------------


def _new_model(model_cfg: ModelConfig, train_ds: Dataset, val_ds: Dataset,
               run: _Run) -> BrainAgeModel:
    """Seed every RNG, check the data, build the model with the training age normalisation."""
    if not isinstance(model_cfg, ModelConfig):
        raise TypeError(f"model_cfg must be a ModelConfig, got {type(model_cfg).__name__}")
    ages = _dataset_ages(train_ds, "train_ds")
    _dataset_ages(val_ds, "val_ds")
    image = train_ds[0]["image"]
    if not isinstance(image, Tensor) or image.ndim != 4 or image.shape[0] != model_cfg.in_channels:
        shape = tuple(image.shape) if hasattr(image, "shape") else type(image).__name__
        raise ValueError(f"train_ds images must be tensors of shape ({model_cfg.in_channels}, D, "
                         f"H, W) (model_cfg.in_channels={model_cfg.in_channels}), got {shape}")
    scale = float(ages.std())
    if not scale > 0:
        logger.warning("all training ages are equal (%.2f): age scale set to 1", ages[0])
        scale = 1.0
    torch.manual_seed(run.cfg.seed)
    np.random.seed(run.cfg.seed)
    random.seed(run.cfg.seed)
    model = build_model(model_cfg, age_mean=float(ages.mean()), age_scale=scale)
    if run.cfg.init_from is not None:
        _load_pretrained_encoder(model, model_cfg, Path(run.cfg.init_from))
    model = model.to(run.device)
    if run.cuda and run.cfg.channels_last:
        model = model.to(memory_format=torch.channels_last_3d)
    if run.cuda and run.world_size > 1 and run.cfg.sync_batchnorm:
        model.encoder = nn.SyncBatchNorm.convert_sync_batchnorm(model.encoder)
    return model


def _load_pretrained_encoder(model: BrainAgeModel, model_cfg: ModelConfig, path: Path) -> None:
    """Copy the encoder weights of checkpoint ``path`` into ``model`` (same architecture)."""
    payload = read_checkpoint(path)  # names the file when absent, unreadable or not ours
    saved = payload["model_config"]
    diffs = [f"{k}: {v!r} there, {model_cfg.to_dict().get(k)!r} here"
             for k, v in saved.items() if model_cfg.to_dict().get(k) != v]
    if diffs:
        raise ValueError(f"init_from {path}: its encoder has another architecture "
                         f"({'; '.join(diffs)}); use the model settings it was trained with")
    prefix = "encoder."
    state = {k[len(prefix):]: v for k, v in payload["model"].items() if k.startswith(prefix)}
    model.encoder.load_state_dict(state)  # strict: every encoder tensor, nothing else
    logger.info("encoder initialised from %s (stage %s, epoch %s)", path, payload.get("stage"),
                payload.get("epoch"))


def _wrap(module: nn.Module, run: _Run) -> nn.Module:
    """DDP-wrap ``module`` when several processes train."""
    if run.world_size == 1:
        return module
    from torch.nn.parallel import DistributedDataParallel

    return DistributedDataParallel(module, device_ids=[run.device.index] if run.cuda else None)


def _steps_per_epoch(dataset: Dataset, run: _Run) -> int:
    per_rank = len(dataset) // run.world_size  # DistributedSampler(drop_last=True)
    return per_rank // (run.cfg.batch_size // run.world_size)


def _val_mae(model: BrainAgeModel, val_ds: Dataset, val_ages: Tensor, run: _Run) -> float:
    """Validation MAE in years (model in eval mode during the pass)."""
    was_training = model.training
    model.eval()
    predictions = _sharded_forward(model, val_ds, run)
    model.train(was_training)
    return float((predictions.double() - val_ages).abs().mean())


def _probe_mae(encoder: nn.Module, train_ds: Dataset, val_ds: Dataset, run: _Run) -> float:
    """Validation MAE of a ridge regression on the encoder's features (a cheap linear probe)."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    was_training = encoder.training
    encoder.eval()
    train_x = _sharded_forward(encoder, train_ds, run).double().numpy()  # (N, D)
    val_x = _sharded_forward(encoder, val_ds, run).double().numpy()  # (M, D)
    encoder.train(was_training)
    probe = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-2, 4, 7)))
    probe.fit(train_x, _dataset_ages(train_ds, "train_ds"))
    return float(np.abs(probe.predict(val_x) - _dataset_ages(val_ds, "val_ds")).mean())


def _rnc_encoder_stage(model: BrainAgeModel, train_ds: Dataset, val_ds: Dataset,
                       run: _Run) -> _Stage:
    """Stage 1: the encoder learns with the RNC loss on two views of every scan."""
    cfg = run.cfg
    loss_fn = RnCLoss(temperature=cfg.temperature)
    seeded = _SeededDataset(train_ds, cfg.seed)
    views = RandomViews(cfg.augment, n_views=2)
    encoder = _wrap(model.encoder, run)
    optimizer = _optimizer(model.encoder.parameters(), cfg, cfg.lr)
    scheduler = _scheduler(optimizer, cfg, cfg.epochs * _steps_per_epoch(train_ds, run), cfg.lr)

    def run_epoch(epoch: int) -> float:
        seeded.epoch = epoch
        encoder.train()
        losses = []
        for batch in _progress(_train_loader(seeded, run, epoch), run, f"RNC {epoch + 1}"):
            images = views.batch(batch["image"].to(run.device), batch["seed"])
            n = images.shape[0]  # images: (B, 2, C, D, H, W)
            flat = _to_device(images.flatten(0, 1), run)  # (B, 2, C, ...) -> (2B, C, D, H, W)
            with _autocast(run):
                features = encoder(flat)  # (2B, F); the two views of a scan are adjacent
            features = features.float().view(n, 2, -1)  # (2B, F) -> (B, 2, F)
            features, ages = gather_views(features, batch["age"].to(run.device))
            loss = loss_fn(features, ages)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
        return float(np.mean(losses))

    def evaluate(epoch: int) -> float:
        last = epoch + 1 == cfg.epochs
        if cfg.probe_every and ((epoch + 1) % cfg.probe_every == 0 or last):
            return _probe_mae(model.encoder, train_ds, val_ds, run)
        return math.nan

    return _Stage("rnc_encoder", cfg.epochs, model, optimizer, scheduler, run_epoch, evaluate,
                  selects_best=False)


def _rnc_head_stage(model: BrainAgeModel, train_ds: Dataset, val_ds: Dataset,
                    run: _Run) -> _Stage:
    """Stage 2: the frozen encoder's features (computed once, no augmentation) train the head."""
    cfg = run.cfg
    model.encoder.requires_grad_(False)
    model.encoder.eval()  # batch-norm statistics stay as stage 1 left them
    optimizer = _optimizer(model.head.parameters(), cfg, cfg.head_lr)
    n_train = len(train_ds)
    steps = math.ceil(n_train / cfg.batch_size)
    scheduler = _scheduler(optimizer, cfg, cfg.head_epochs * steps, cfg.head_lr)
    cache: dict[str, Tensor] = {}
    scale = float(model.age_scale)

    def features() -> dict[str, Tensor]:
        if not cache:  # computed on first use only: a finished, resumed stage never needs them
            for name, ds in (("train", train_ds), ("val", val_ds)):
                cache[name] = _sharded_forward(model.encoder, ds, run).to(run.device)  # (N, F)
                cache[f"{name}_age"] = torch.as_tensor(_dataset_ages(ds, name), device=run.device)
        return cache

    def run_epoch(epoch: int) -> float:
        data = features()
        if epoch == 0:  # a fresh head (a resumed one restores its buffers): unit-scale features
            model.head.set_standardisation(data["train"])
        order = torch.randperm(n_train, generator=torch.Generator().manual_seed(
            view_seed(cfg.seed, epoch, 1)))  # same on every process: the heads stay identical
        errors = []
        for batch in order.split(cfg.batch_size):
            prediction = model.head(data["train"][batch]).double() * scale + model.age_mean
            error = (prediction - data["train_age"][batch]).abs()  # years
            optimizer.zero_grad(set_to_none=True)
            (error.mean() / scale).float().backward()  # L1 on normalised ages
            optimizer.step()
            scheduler.step()
            errors.append(error.detach().cpu())
        return float(torch.cat(errors).mean())

    def evaluate(epoch: int) -> float:
        data = features()
        with torch.no_grad():
            prediction = model.head(data["val"]).double() * scale + model.age_mean
        return float((prediction - data["val_age"]).abs().mean())

    return _Stage("rnc_head", cfg.head_epochs, model, optimizer, scheduler, run_epoch, evaluate,
                  selects_best=True)


def _l1_stage(model: BrainAgeModel, train_ds: Dataset, val_ds: Dataset, run: _Run) -> _Stage:
    """The baseline: the whole network trained end to end with L1 on one view per scan."""
    cfg = run.cfg
    seeded = _SeededDataset(train_ds, cfg.seed)
    views = RandomViews(cfg.augment, n_views=1)
    network = _wrap(model, run)
    optimizer = _optimizer(model.parameters(), cfg, cfg.lr)
    scheduler = _scheduler(optimizer, cfg, cfg.epochs * _steps_per_epoch(train_ds, run), cfg.lr)
    val_ages = torch.as_tensor(_dataset_ages(val_ds, "val_ds"))
    scale = float(model.age_scale)

    def run_epoch(epoch: int) -> float:
        seeded.epoch = epoch
        network.train()
        errors = []
        for batch in _progress(_train_loader(seeded, run, epoch), run, f"L1 {epoch + 1}"):
            images = views.batch(batch["image"].to(run.device), batch["seed"])
            images = _to_device(images.flatten(0, 1), run)  # (B, 1, C, ...) -> (B, C, ...)
            with _autocast(run):
                prediction = network(images).float()  # (B,), years
            error = (prediction - batch["age"].to(run.device).float()).abs()
            optimizer.zero_grad(set_to_none=True)
            (error.mean() / scale).backward()  # L1 on normalised ages
            optimizer.step()
            scheduler.step()
            errors.append(error.detach().cpu())
        return float(torch.cat(errors).mean())

    def evaluate(epoch: int) -> float:
        return _val_mae(model, val_ds, val_ages, run)

    return _Stage("l1", cfg.epochs, model, optimizer, scheduler, run_epoch, evaluate,
                  selects_best=True)


# --- entry points -------------------------------------------------------------------------------


def _result(run: _Run, tracker: _Tracker, stages: Sequence[str]) -> TrainResult:
    if run.world_size > 1:
        dist.barrier()  # rank 0 has written every file
    history = pd.DataFrame(tracker.history, columns=list(LOG_COLUMNS))
    seconds = {s: float(history.loc[history["stage"] == s, "seconds"].mean()) for s in stages}
    return TrainResult(
        best_checkpoint=run.out_dir / CHECKPOINT_FILE,
        last_checkpoints={s: run.out_dir / f"{s}_last.pt" for s in stages},
        history=history, best_val_mae=tracker.best_val_mae, best_epoch=tracker.best_epoch,
        seconds_per_epoch=seconds)


def train_rnc(train_ds: Dataset, val_ds: Dataset, model_cfg: ModelConfig,
              train_cfg: TrainConfig, out_dir: str | Path) -> TrainResult:
    """Rank-N-Contrast: train the encoder with the RNC loss, then a linear head with L1.

    Parameters
    ----------
    train_ds, val_ds : Dataset
        Items ``{"image": Tensor (C, D, H, W), "age": float, ...}``
        (:class:`brainage.models.datasets.VolumeDataset`).
    model_cfg : ModelConfig
        The encoder.
    train_cfg : TrainConfig
        ``epochs`` of RNC training (``lr``), then ``head_epochs`` of the head (``head_lr``) on
        the frozen encoder's features; ``head_epochs`` must be >= 1.
    out_dir : str or Path
        Run folder (created): checkpoints and ``log.csv``; an existing ``*_last.pt`` there is
        resumed when ``train_cfg.resume``.

    Returns
    -------
    TrainResult
        ``best.pt`` is the head epoch with the lowest validation MAE; stage-1 rows of the
        history log the validation MAE of a ridge probe (``probe_every``).

    References
    ----------
    .. [1] Zha, K., Cao, P., Son, J., Yang, Y., Katabi, D. (2023). Rank-N-Contrast: Learning
       Continuous Representations for Regression. NeurIPS 2023. arXiv:2210.01189.
    """
    if isinstance(train_cfg, TrainConfig) and train_cfg.head_epochs < 1:
        raise ValueError(f"TrainConfig.head_epochs must be >= 1 for train_rnc (the head is the "
                         f"selected model), got {train_cfg.head_epochs}")
    run = _setup_run(train_cfg, out_dir)
    model = _new_model(model_cfg, train_ds, val_ds, run)
    tracker = _Tracker()
    _run_stage(_rnc_encoder_stage(model, train_ds, val_ds, run), run, model_cfg, tracker)
    _run_stage(_rnc_head_stage(model, train_ds, val_ds, run), run, model_cfg, tracker)
    return _result(run, tracker, ("rnc_encoder", "rnc_head"))


def train_l1(train_ds: Dataset, val_ds: Dataset, model_cfg: ModelConfig,
             train_cfg: TrainConfig, out_dir: str | Path) -> TrainResult:
    """The baseline: the same network trained end to end with an L1 loss.

    Parameters are those of :func:`train_rnc`; ``train_cfg.epochs`` (>= 1) epochs at
    ``train_cfg.lr`` with one augmented view per scan; ``head_epochs``, ``head_lr``,
    ``temperature`` and ``probe_every`` are unused. ``best.pt`` is the epoch with the lowest
    validation MAE.
    """
    if isinstance(train_cfg, TrainConfig) and train_cfg.epochs < 1:
        raise ValueError(f"TrainConfig.epochs must be >= 1 for train_l1, got {train_cfg.epochs}")
    run = _setup_run(train_cfg, out_dir)
    model = _new_model(model_cfg, train_ds, val_ds, run)
    tracker = _Tracker()
    _run_stage(_l1_stage(model, train_ds, val_ds, run), run, model_cfg, tracker)
    return _result(run, tracker, ("l1",))


def train_permuted_age_model(train_ds: Dataset, val_ds: Dataset, model_cfg: ModelConfig,
                             train_cfg: TrainConfig, out_dir: str | Path) -> TrainResult:
    """The data-randomisation control of a saliency map: the same network on permuted ages.

    The L1 network of :func:`train_l1`, trained on the same scans with their ages shuffled
    (training and validation ages each permuted, seeded by ``train_cfg.seed``, so that model
    selection does not see the real validation ages either). It cannot have learned where age
    acts, so whatever its attribution maps share with the real models' (image structure,
    tissue boundaries, the architecture's receptive fields) is what a map shows without
    knowing age (Adebayo et al. 2018).

    Parameters
    ----------
    train_ds, val_ds : Dataset
        The training and validation scans (ages are read, then permuted).
    model_cfg, train_cfg : ModelConfig, TrainConfig
        As for :func:`train_l1` (a few epochs are enough: the point is the architecture and
        the training procedure without the age signal).
    out_dir : str or Path
        Checkpoint folder.

    Returns
    -------
    TrainResult

    References
    ----------
    .. [1] Adebayo J., Gilmer J., Muelly M., Goodfellow I., Hardt M., Kim B. (2018). Sanity
       checks for saliency maps. NeurIPS, 9505-9515.
    """
    rng = np.random.default_rng(np.random.SeedSequence([int(train_cfg.seed), 15]))
    permuted = []
    for name, dataset in (("train_ds", train_ds), ("val_ds", val_ds)):
        ages = _dataset_ages(dataset, name)
        images = [dataset[i]["image"].numpy() for i in range(len(dataset))]
        ids = [str(dataset[i].get("participant_id", i)) for i in range(len(dataset))]
        permuted.append(VolumeDataset(np.stack(images), rng.permutation(ages), ids))
    logger.info("permuted-age control: %d training and %d validation scans", len(permuted[0]),
                len(permuted[1]))
    return train_l1(permuted[0], permuted[1], model_cfg, train_cfg, out_dir)

