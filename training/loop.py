"""The training loop: `train(TrainConfig) -> Path` and `python -m training train ...`.

One loop for every kind: the model's `loss(x, generator=, step=)` is all it calls. Per step, the
generator is re-seeded from (seed, rank, step), and the data order is a seeded per-epoch permutation
(distributed.ShardSampler), so a run is a function of its config: same seed, same weights (on the CPU),
and a resumed run sees the data and noise it would have seen had it never stopped.
"""

import argparse
import contextlib
import copy
import csv
import dataclasses
import math
import os
import signal
import threading
import time
import typing
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset
from tqdm import tqdm

import models
from models.vqvae import DOWNSAMPLE
from training import checkpoint as ckpt
from training import distributed
from training.config import (
    FIELDS,
    TrainConfig,
    check_type,
    config_from_dict,
    parse_override,
    read_config_file,
)
from training.data import BUILTIN, ImageDataset, default_channels, make_dataset
from training.distributed import ShardSampler, World
from training.errors import NonFiniteLoss, OneLineParser, Terminated, UserError, check_folder_path

StepCallback = Callable[[int, dict[str, float]], None]


def train(
    config: TrainConfig, *, callback: StepCallback | None = None, command: list[str] | None = None
) -> Path:
    """Train (or, with `config.resume`, continue) a model; return the checkpoint folder.

    callback(step, logs) runs after every optimizer step (step counts completed steps). A
    KeyboardInterrupt, from Ctrl-C, from SIGTERM under `stop_on_sigterm` (`Terminated`) or from the
    callback, saves a checkpoint at the last completed step and is raised again. Errors a user can cause
    raise `UserError`.
    """
    _check(config)
    world, device = distributed.setup(config.device)
    try:
        folder = _Run(config, world, device, command).run(callback)
        distributed.finish(world)
        return folder
    finally:
        distributed.teardown(world)


class _StopRequest:
    """The SIGTERM handler of the training commands: it only takes note. The loop acts on it between two
    steps, at a step every rank agrees on, by raising `Terminated`, which saves a checkpoint as Ctrl-C
    does. Further SIGTERMs change nothing, so they never cut a save short (SIGKILL stays the hard stop);
    one during the final validation and save lets the run finish."""

    def __init__(self) -> None:
        self.requested = False

    def __call__(self, signum: int, frame: Any) -> None:
        self.requested = True


SIGTERM_STOP = _StopRequest()


@contextlib.contextmanager
def stop_on_sigterm() -> Iterator[None]:
    """Route SIGTERM to `SIGTERM_STOP` for the duration, where the process still has Python's default
    handling (not when it ignores SIGTERM or has its own handler, nor off the main thread)."""
    SIGTERM_STOP.requested = False
    if threading.current_thread() is not threading.main_thread() or (
        signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
    ):
        yield
        return
    signal.signal(signal.SIGTERM, SIGTERM_STOP)
    try:
        yield
    finally:
        if not SIGTERM_STOP.requested:  # once stopping, later SIGTERMs must not end the exit half-way
            signal.signal(signal.SIGTERM, signal.SIG_DFL)


def _check(config: TrainConfig) -> None:
    if config.model not in models.KINDS:
        raise UserError(f"unknown model {config.model!r}; choose one of {', '.join(models.KINDS)}")
    if config.preset not in models.PRESET_NAMES:
        raise UserError(f"unknown preset {config.preset!r}; choose one of {', '.join(models.PRESET_NAMES)}")
    positive = {"steps": config.steps, "batch_size": config.batch_size, "epoch_crops": config.epoch_crops}
    for name, value in positive.items():
        if value <= 0:
            raise UserError(f"{name} must be > 0, not {value}")
    floats = {"epochs": config.epochs, "lr": config.lr, "weight_decay": config.weight_decay}
    floats |= {"min_lr_ratio": config.min_lr_ratio, "grad_clip": config.grad_clip}
    for name, number in floats.items():
        if number is not None and not math.isfinite(number):
            raise UserError(f"{name} must be a finite number, not {number}")
    for name in ("epochs", "lr"):
        if (number := getattr(config, name)) is not None and number <= 0:
            raise UserError(f"{name} must be > 0, not {number}")
    for name in ("val_every", "checkpoint_every", "log_every", "warmup_steps", "val_images", "grad_clip"):
        if getattr(config, name) < 0:
            raise UserError(f"{name} must be >= 0, not {getattr(config, name)}")
    for name in ("weight_decay", "workers"):
        if (number := getattr(config, name)) is not None and number < 0:
            raise UserError(f"{name} must be >= 0, not {number}")
    if not 0 <= config.min_lr_ratio <= 1:
        raise UserError(f"min_lr_ratio must be in [0, 1], not {config.min_lr_ratio}")
    check_folder_path(config.out, "--out")


def model_config_for(config: TrainConfig) -> Any:
    """The model config of a fresh run: preset, then data-driven defaults, then the user's overrides.

    Unless overridden, `channels` follows the data (1 for shapes, 3 otherwise) and a VAE's `likelihood`
    is bernoulli on the binary shapes and gaussian on photographs.
    """
    hints = typing.get_type_hints(type(models.make_config(config.model, config.preset)))
    implied: dict[str, Any] = {"channels": default_channels(config.data)}
    if "likelihood" in hints:
        implied["likelihood"] = "bernoulli" if config.data == "shapes" else "gaussian"
    overrides = {
        # unknown names are left to make_config, which names them in its error
        key: check_type(key, value, hints[key], "--set") if key in hints else value
        for key, value in config.overrides.items()
    }
    try:
        return models.make_config(config.model, config.preset, **{**implied, **overrides})
    except (TypeError, ValueError) as exc:
        raise UserError(f"model option: {exc}") from exc


def redraw(model: nn.Module, names: str) -> None:
    """Draw the weights of the comma-separated modules `names` of `model` afresh, with each layer's own
    initialization (`reset_parameters`) from torch's global generator; every other weight is kept.

    For fine-tuning with a new head, or for a latent layer re-learned on trained features.
    """
    modules = dict(model.named_modules())
    chosen = [name.strip() for name in names.split(",") if name.strip()]
    unknown = [name for name in chosen if name not in modules]
    if unknown or not chosen:
        layers = [n for n, m in modules.items() if n and hasattr(m, "reset_parameters")]
        raise UserError(
            f"--reinit: no module named {', '.join(unknown) or repr(names)} in this model; layers with "
            f"weights: {', '.join(layers[:12])}{' ...' if len(layers) > 12 else ''}"
        )
    for name in chosen:
        layers = [m for m in modules[name].modules() if hasattr(m, "reset_parameters")]
        if not layers:
            raise UserError(f"--reinit: module {name} has no weights to draw afresh")
        for layer in layers:
            layer.reset_parameters()


class _LossModule(nn.Module):
    """Routes `model.loss` through `forward`, which DDP needs to sync gradients and broadcast buffers."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model: Any = model  # any of models' autoencoders: they share `loss`, not a base class

    def forward(self, x: torch.Tensor, generator: torch.Generator, step: int) -> tuple[torch.Tensor, dict]:
        return self.model.loss(x, generator=generator, step=step)


def _seed(*parts: int) -> int:
    """A 63-bit seed mixed from integers (numpy's SeedSequence), for torch generators."""
    return int(np.random.SeedSequence([p & 0xFFFFFFFF for p in parts]).generate_state(2, np.uint64)[0] >> 1)


class _Run:
    def __init__(self, config: TrainConfig, world: World, device: torch.device, command: list[str] | None):
        self.config, self.world, self.device, self.command = config, world, device, command
        self.out = Path(config.out)
        self.ckpt_dir = self.out / ckpt.CHECKPOINT_DIR
        self.amp = config.amp and (device.type == "cuda" or config.amp_cpu)
        self.step = 0
        # A folder is stored absolute, so evaluation from another directory finds it.
        self.data_spec = config.data if config.data in BUILTIN else str(Path(config.data).resolve())
        self.last_val: dict[str, float] = {}

        self.model: Any  # one of models' autoencoders: they share `loss`, not a base class
        self.model_config: Any
        torch.manual_seed(config.seed)  # model initialisation; identical on every rank
        if config.resume:
            self.model, self.model_config, state = self._restore_model()
        else:
            if (self.ckpt_dir / ckpt.STATE_FILE).exists():
                raise UserError(f"{self.out} already holds a checkpoint; pass --resume or another --out")
            if config.init_from:
                self.model, self.model_config = self._warm_start(config.init_from)
                if config.reinit:
                    redraw(self.model, config.reinit)
            elif config.reinit:
                raise UserError("--reinit draws modules of a trained model afresh: it needs --init-from")
            else:
                self.model_config = model_config_for(config)
                self.model = models.build_model(config.model, self.model_config)
        self.model.to(device).train()
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=config.resolved_lr(), weight_decay=config.resolved_weight_decay()
        )
        if config.resume:
            ckpt.load_optimizer(self.ckpt_dir, self.optimizer)
            self.step = int(state["step"])
        self._make_data()
        self.total_steps = (
            math.ceil(config.epochs * self.steps_per_epoch) if config.epochs is not None else config.steps
        )
        self.net: nn.Module = _LossModule(self.model)
        if world.distributed:
            unused = self._has_unused_parameters()
            self.net = distributed.wrap(self.net, device, find_unused_parameters=unused)
        self.generator = torch.Generator(device=device)

    # --- setup ---------------------------------------------------------------------------------------------
    def _restore_model(self) -> tuple[nn.Module, Any, dict[str, Any]]:
        if not (self.ckpt_dir / ckpt.STATE_FILE).is_file():
            raise UserError(f"--resume: no checkpoint in {self.out} (no {self.ckpt_dir / ckpt.STATE_FILE})")
        folder, state = self._checkpoint("--resume", self.out)
        model = ckpt.build_from_state(state)
        saved = state["model_config"]
        clashes = sorted(k for k, v in self.config.overrides.items() if saved.get(k, object()) != v)
        if clashes:
            raise UserError(f"--resume: model option(s) {', '.join(clashes)} differ from the checkpoint's")
        ckpt.load_weights(folder, model)
        return model, model.config, state

    def _checkpoint(self, flag: str, path: str | Path) -> tuple[Path, dict[str, Any]]:
        """The checkpoint folder at `path` and its state, which must be of the kind being trained."""
        folder = ckpt.resolve_checkpoint(path)
        state = ckpt.read_state(folder)
        self._check_kind(flag, path, state)
        return folder, state

    def _check_kind(
        self, flag: str, path: str | Path, state: dict[str, Any], what: str = "checkpoint"
    ) -> None:
        kind = state["kind"]
        if kind != self.config.model:
            raise UserError(f"{flag}: {path} holds a {kind} {what}, not the --model {self.config.model}")

    def _warm_start(self, source: str) -> tuple[nn.Module, Any]:
        """A model with the weights of the checkpoint (or artifact) at `source`, its config changed by the
        overrides.

        The run itself is new (step 0, fresh optimizer and schedule): fine-tuning a trained model, on
        other data or with another loss weight such as beta. The architecture must stay the same.
        """
        manifest = None
        if (Path(source) / "manifest.json").is_file():
            state, manifest = ckpt.artifact_state(source)
            self._check_kind("--init-from", source, state, "artifact")
        else:
            folder, state = self._checkpoint("--init-from", source)
        values = {**state["model_config"], **self.config.overrides}
        try:
            model_config = models.config_from_dict(self.config.model, values)
        except (TypeError, ValueError) as exc:
            raise UserError(f"model option: {exc}") from exc
        model = models.build_model(self.config.model, model_config)
        if manifest is None:
            ckpt.load_weights(folder, model)
            return model, model_config
        # the weights are checked against the graphs on a model of the artifact's own config, which the
        # overrides (a VAE's likelihood, say) may make compute something else
        exported = ckpt.build_from_state(state)
        ckpt.load_artifact_weights(source, manifest, exported)
        ckpt.load_tensors(exported.state_dict(), model, f"artifact {source}")
        quantizer = getattr(model, "quantizer", None)
        if quantizer is not None:  # the graphs hold the codes but not their EMA statistics
            grid = model_config.image_size // DOWNSAMPLE  # token grid side at the training size
            quantizer.seed_statistics(self.config.batch_size * self.world.size * grid * grid)
        return model, model_config

    def _make_data(self) -> None:
        cfg, mc = self.config, self.model_config
        kwargs = dict(image_size=mc.image_size, channels=mc.channels, seed=cfg.seed, length=cfg.epoch_crops)
        self.train_data: ImageDataset = make_dataset(cfg.data, "train", **kwargs)
        # a folder's unreadable files, relative to it: warned about as they are found, kept in state.json
        skipped, root = getattr(self.train_data, "skipped", []), getattr(self.train_data, "root", None)
        self.data_skipped = [Path(p).relative_to(root).as_posix() for p in skipped]
        val_data = make_dataset(cfg.data, "val", **kwargs)
        n_val = min(len(val_data), cfg.val_images) if cfg.val_images else len(val_data)
        picked = np.linspace(0, len(val_data) - 1, n_val).round().astype(int)  # evenly spaced, fixed
        self.val_data = Subset(val_data, picked[self.world.rank :: self.world.size].tolist())
        # a rank left without validation images (fewer than processes) still needs the logged keys, so
        # that every rank sums a tensor of the same length: it runs one image, counted with weight 0
        self.val_probe = Subset(val_data, picked[:1].tolist())
        self.sampler = ShardSampler(len(self.train_data), seed=cfg.seed, world=self.world)
        self.steps_per_epoch = len(self.sampler) // cfg.batch_size
        if self.steps_per_epoch == 0:
            raise UserError(
                f"the {cfg.data} training split has {len(self.train_data)} images per epoch, fewer than one "
                f"batch of {cfg.batch_size} per process; lower --batch-size"
            )
        # CPU runs load in the main process (deterministic, and the CPU is busy with the model anyway).
        auto = 0 if self.device.type == "cpu" else min(8, max(1, (os.cpu_count() or 1) // self.world.size))
        self.workers = cfg.workers if cfg.workers is not None else auto

    def _loader(self, data: Dataset, sampler: Any = None) -> DataLoader:
        return DataLoader(
            data,
            batch_size=self.config.batch_size,
            sampler=sampler,
            drop_last=sampler is not None,
            num_workers=self.workers,
            pin_memory=self.device.type == "cuda",
        )

    def _has_unused_parameters(self) -> bool:
        """Probe one backward on a copy: DDP must be told when some parameter gets no gradient
        (e.g. the Gaussian's log-sigma of a Bernoulli VAE)."""
        probe = copy.deepcopy(self.model)
        mc = self.model_config
        x = torch.rand(2, mc.channels, mc.image_size, mc.image_size, device=self.device)
        loss, _ = probe.loss(x, generator=torch.Generator(device=self.device).manual_seed(0), step=0)
        loss.backward()
        return any(p.requires_grad and p.grad is None for p in probe.parameters())

    # --- the loop ------------------------------------------------------------------------------------------
    def run(self, callback: StepCallback | None) -> Path:
        cfg = self.config
        if self.step >= self.total_steps:
            self._say(f"checkpoint already at step {self.step} >= {self.total_steps} steps; nothing to do")
            return self.ckpt_dir
        self.metrics = _Metrics(self.out, self.step) if self.world.is_main else None
        bar = tqdm(
            total=self.total_steps, initial=self.step, unit="step", dynamic_ncols=True,
            disable=cfg.quiet or not self.world.is_main,
        )  # fmt: skip
        self._say(self._describe())
        try:
            self._loop(bar, callback)
            bar.close()
            distributed.sync_buffers(self.model, self.world)
            if self.last_val.get("step") != self.step:  # inside: a Ctrl-C here still saves the steps done
                self._validate()
        except KeyboardInterrupt:
            bar.close()
            if self.world.is_main:
                self._save()
                after = (
                    "training had finished (only the final validation was cut short); `evaluate` measures it"
                    if self.step >= self.total_steps
                    else "--resume continues"
                )
                self._say(f"interrupted at step {self.step}; checkpoint {self.ckpt_dir}; {after}")
            raise
        finally:
            bar.close()
            if self.metrics:
                self.metrics.close()
        digests = distributed.gather_digests(ckpt.weights_sha256(self.model), self.world, self.device)
        if self.world.is_main:
            self._save(replica_sha256=digests)
            if len(set(digests)) > 1:
                self._say(f"warning: replicas differ at the end: {digests}", force=True)
            self._say(f"done: step {self.step}, checkpoint in {self.ckpt_dir}")
        return self.ckpt_dir

    def _loop(self, bar: tqdm, callback: StepCallback | None) -> None:
        cfg = self.config
        window: dict[str, float] = {}
        window_steps, window_start = 0, time.perf_counter()
        while self.step < self.total_steps:
            epoch, batch_in_epoch = divmod(self.step, self.steps_per_epoch)
            self.sampler.set_epoch(epoch, skip=batch_in_epoch * cfg.batch_size)
            if hasattr(self.train_data, "set_epoch"):
                self.train_data.set_epoch(epoch)
            for x in self._loader(self.train_data, self.sampler):
                logs = self._train_step(x.to(self.device, non_blocking=True))
                self.step += 1
                for key, value in logs.items():
                    window[key] = window.get(key, 0.0) + value
                window_steps += 1
                if callback is not None:
                    callback(self.step, logs)
                if cfg.log_every and self.step % cfg.log_every == 0 or self.step == self.total_steps:
                    elapsed = time.perf_counter() - window_start
                    rate = window_steps * cfg.batch_size * self.world.size / max(elapsed, 1e-9)
                    means = {k: v / window_steps for k, v in window.items()}
                    bar.set_postfix(loss=f"{means['loss']:.4g}", img_s=f"{rate:.0f}", refresh=False)
                    self._log("train", {**means, "images_per_s": rate, "lr": self._lr(self.step - 1)})
                    window, window_steps, window_start = {}, 0, time.perf_counter()
                bar.update(1)
                paused = time.perf_counter()  # validation and saving do not count against images/s
                if cfg.val_every and self.step % cfg.val_every == 0 and self.step < self.total_steps:
                    self._validate()
                if cfg.checkpoint_every and self.step % cfg.checkpoint_every == 0 and self.world.is_main:
                    self._save()
                window_start += time.perf_counter() - paused
                if distributed.any_rank(SIGTERM_STOP.requested, self.world, self.device):
                    raise Terminated()
                if self.step >= self.total_steps:
                    break

    def _train_step(self, x: torch.Tensor) -> dict[str, float]:
        for group in self.optimizer.param_groups:
            group["lr"] = self._lr(self.step)
        self.generator.manual_seed(_seed(self.config.seed, self.world.rank, self.step))
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
            loss, logs = self.net(x, self.generator, self.step)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip = self.config.grad_clip or math.inf
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), clip)
        # After DDP's all-reduce the gradient norm is the same on every rank, so every rank stops together;
        # the local loss is only trusted alone when there is one rank.
        local_bad = not self.world.distributed and not math.isfinite(loss.item())
        if local_bad or not torch.isfinite(grad_norm):
            raise NonFiniteLoss(
                f"the loss became NaN or infinite at step {self.step + 1} (loss {loss.item():.4g}, gradient "
                f"norm {float(grad_norm):.4g}); try a lower --lr or --grad-clip (diverged weights not saved)"
            )
        self.optimizer.step()
        return {**logs, "grad_norm": float(grad_norm)}

    def _lr(self, step: int) -> float:
        """Linear warmup over warmup_steps, then cosine from lr down to lr * min_lr_ratio at total_steps."""
        cfg, peak = self.config, self.config.resolved_lr()
        if step < cfg.warmup_steps:
            return peak * (step + 1) / cfg.warmup_steps
        span = max(self.total_steps - cfg.warmup_steps, 1)
        progress = min((step - cfg.warmup_steps) / span, 1.0)
        return peak * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))

    @torch.no_grad()
    def _validate(self) -> dict[str, float]:
        """Mean loss (and every logged value) over the validation images, summed over all ranks."""
        self.model.eval()
        keys: list[str] = []
        sums: torch.Tensor | None = None
        count = 0
        generator = torch.Generator(device=self.device)
        for i, x in enumerate(self._loader(self.val_data)):
            generator.manual_seed(_seed(self.config.seed, 1 << 20, i))  # the same noise at every validation
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                _, logs = self.model.loss(x.to(self.device), generator=generator, step=self.step)
            keys = keys or sorted(logs)
            row = torch.tensor([logs[k] * len(x) for k in keys], dtype=torch.float64)
            sums = row if sums is None else sums + row
            count += len(x)
        if not keys and len(self.val_probe):
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.amp):
                x = next(iter(self._loader(self.val_probe)))
                _, logs = self.model.loss(x.to(self.device), generator=generator, step=self.step)
            keys = sorted(logs)
        self.model.train()
        zeros = torch.zeros(len(keys), dtype=torch.float64)  # float64 on every rank: the same bytes to sum
        totals = torch.cat([sums if sums is not None else zeros, torch.tensor([count], dtype=torch.float64)])
        if self.world.distributed:
            totals = distributed.all_reduce_sum(totals.to(self.device), self.world).cpu()
        means = {k: float(v) / max(float(totals[-1]), 1.0) for k, v in zip(keys, totals[:-1], strict=True)}
        self.last_val = {**means, "step": self.step}
        self._log("val", means)
        if means:
            self._say(f"step {self.step}: validation loss {means['loss']:.5g}")
        return means

    # --- output --------------------------------------------------------------------------------------------
    def _save(self, **extra: Any) -> None:
        cfg = self.config
        state = {
            "kind": cfg.model,
            "model_config": dataclasses.asdict(self.model_config),
            "train_config": cfg.to_dict(),
            "data": self.data_spec,
            "data_skipped": self.data_skipped,
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "seed": cfg.seed,
            "world_size": self.world.size,
            "val": {k: v for k, v in self.last_val.items() if k != "step"},
            "val_step": self.last_val.get("step"),
            "command": self.command,
            "torch_version": torch.__version__,
            **extra,
        }
        ckpt.save_checkpoint(self.ckpt_dir, self.model, self.optimizer, state)

    def _log(self, split: str, values: dict[str, float]) -> None:
        if self.metrics is not None:
            self.metrics.write(self.step, split, values)

    def _say(self, message: str, *, force: bool = False) -> None:
        if self.world.is_main and (force or not self.config.quiet):
            tqdm.write(message)

    def _describe(self) -> str:
        cfg, n = self.config, sum(p.numel() for p in self.model.parameters())
        start = f"resuming at step {self.step}" if self.step else "starting"
        return (
            f"{start}: {cfg.model} ({n:,} parameters) on {cfg.data} ({len(self.train_data):,} train images"
            f"{f', {len(self.data_skipped)} unreadable file(s) skipped' if self.data_skipped else ''}), "
            f"{self.total_steps} steps of {cfg.batch_size} x {self.world.size} on {self.device}"
            f"{' with bf16 autocast' if self.amp else ''}; run folder {self.out}"
        )


class _Metrics:
    """RUN_DIR/metrics.csv (and TensorBoard events when `tensorboard` is installed), written by rank 0.

    The CSV's columns are step, split, loss, images_per_s, lr, then the model's log keys; a row that brings
    a key the header lacks (a train-only key after a validation row came first) widens it, the earlier rows
    rewritten with that cell empty. On resume, rows past the checkpoint's step are dropped so the file reads
    as one run.
    """

    FIRST = ("step", "split", "loss", "images_per_s", "lr")

    def __init__(self, out: Path, start_step: int) -> None:
        out.mkdir(parents=True, exist_ok=True)
        self.path = out / "metrics.csv"
        self.columns: list[str] | None = None
        if self.path.exists() and start_step > 0:
            rows = self._rows()
            self.columns = list(rows[0]) if rows else None
            keep = [r for r in rows if r.get("step", "").isdigit() and int(r["step"]) <= start_step]
            self._rewrite(keep)
        elif self.path.exists():
            self.path.unlink()
        self.tensorboard = _tensorboard_writer(out)

    def _rows(self) -> list[dict[str, str]]:
        with self.path.open(newline="") as f:
            return list(csv.DictReader(f))

    def _rewrite(self, rows: list[dict[str, str]]) -> None:
        with self.path.open("w", newline="") as f:
            if self.columns:
                writer = csv.DictWriter(f, self.columns)
                writer.writeheader()
                writer.writerows(rows)

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        known = self.columns or list(self.FIRST)
        added = sorted(set(values) - set(known))
        if self.columns is None or added:
            rows = self._rows() if self.columns else []
            self.columns = [*known, *added]
            self._rewrite(rows)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, self.columns, restval="", extrasaction="ignore")
            writer.writerow({"step": step, "split": split, **{k: f"{v:.6g}" for k, v in values.items()}})
        if self.tensorboard is not None:
            for key, value in values.items():
                self.tensorboard.add_scalar(f"{split}/{key}", value, step)

    def close(self) -> None:
        if self.tensorboard is not None:
            self.tensorboard.close()


def _tensorboard_writer(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: the CSV is always there
        return None
    return SummaryWriter(log_dir=str(out / "tensorboard"))


# --- command line ---------------------------------------------------------------------------------------
def _parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog="python -m training train",
        description="Train an autoencoder. Settings: defaults < --config FILE < flags.",
        argument_default=argparse.SUPPRESS,  # only the flags given override the file
    )
    add = p.add_argument
    add("--model", choices=models.KINDS, help="model kind")
    add("--data", help="shapes, photos, or a folder of PNG/JPEG/WebP images (default shapes)")
    add("--preset", choices=models.PRESET_NAMES, help="model size preset (default: default)")
    add("--set", dest="overrides", nargs="+", action="extend", metavar="KEY=VALUE",
        help="model config fields, e.g. --set beta=8 latent_dim=10 (channels and a VAE's likelihood "
             "follow the data unless set)")
    add("--steps", type=int, help="optimizer steps in all (default 10000)")
    add("--epochs", type=float, help="train this many epochs instead of --steps")
    add("--batch-size", type=int, help="images per step per process (default 64)")
    add("--lr", type=float, help="peak learning rate (default per kind)")
    add("--weight-decay", type=float, help="AdamW weight decay (default per kind)")
    add("--warmup-steps", type=int, help="linear warmup steps before the cosine decay (default 200)")
    add("--grad-clip", type=float, help="max gradient norm, 0 = off (default 1.0)")
    add("--seed", type=int, help="seed of everything random (default 0)")
    add("--device", choices=("auto", "cpu", "cuda"), help="default auto")
    add("--out", help="run folder (default runs/run)")
    add("--resume", action="store_true", help="continue from the checkpoint in --out")
    add("--init-from", metavar="CHECKPOINT",
        help="start from this checkpoint's weights, or an exported artifact's (same kind and "
             "architecture; --set may change e.g. beta), with a fresh optimizer and schedule")
    add("--reinit", metavar="MODULES",
        help="with --init-from: draw these modules' weights afresh, comma-separated names as in the model "
             "(e.g. encoder.11,decoder.0: a VAE's layers on either side of the latent)")
    add("--val-every", type=int, help="steps between validations, 0 = only at the end (default 500)")
    add("--val-images", type=int, help="validation images per validation (default 2048)")
    add("--checkpoint-every", type=int, help="steps between checkpoints, 0 = only at the end (default 1000)")
    add("--log-every", type=int, help="steps per metrics.csv row (default 50)")
    add("--epoch-crops", type=int, help="photos: crops per epoch (default 10000)")
    add("--workers", type=int, help="DataLoader worker processes (default 0 on CPU, up to 8 on CUDA)")
    add("--no-amp", dest="amp", action="store_false", help="fp32 on CUDA too (no bf16 autocast)")
    add("--amp-cpu", action="store_true",
        help="bf16 autocast on the CPU as well (pays off on CPUs with bf16 instructions, e.g. AMX)")
    add("--quiet", action="store_true", help="no progress bar or messages")
    add("--config", dest="config_file",
        help="JSON or TOML file of settings: keys as the long flags with _, but overrides (a table) for "
             "--set and amp = false for --no-amp")
    return p  # fmt: skip


def _steps_replace_epochs(values: dict[str, Any], given: dict[str, Any]) -> None:
    """Steps given anew (in a config file or a flag) without epochs beside them win over an epochs
    setting from before: `--resume --steps N` extends a run started with --epochs."""
    if "steps" in given and "epochs" not in given:
        values.pop("epochs", None)


def parse_args(argv: list[str]) -> TrainConfig:
    """Command-line arguments (and the --config file they name) -> TrainConfig.

    Precedence: defaults < the checkpoint's own settings (with --resume) < --config file < flags, so
    `train --out RUN --resume` continues a run as it was started, and `--steps N` extends it.
    """
    flags = vars(_parser().parse_args(argv))
    from_file = read_config_file(flags.pop("config_file")) if "config_file" in flags else {}

    def given(key: str) -> Any:  # a flag, else the config file's value (None when neither sets it)
        return flags[key] if flags.get(key) is not None else from_file.get(key)

    values: dict[str, Any] = {}
    if given("resume"):
        if given("init_from"):
            raise UserError(
                "--resume continues the run in --out; --init-from starts a new run from other weights: "
                "give one"
            )
        out = Path(given("out") or TrainConfig.out)
        if not (out / ckpt.CHECKPOINT_DIR / ckpt.STATE_FILE).is_file():
            raise UserError(f"--resume: no checkpoint in {out} to continue (drop --resume to start a run)")
        state = ckpt.read_state(out)
        values = dict(state.get("train_config") or {})
        preset, saved = given("preset"), values.get("preset")
        if preset is not None and saved is not None and preset != saved:  # the checkpoint's architecture wins
            raise UserError(f"--resume: --preset {preset} differs from the checkpoint's {saved}")
        if isinstance(state.get("data"), str):  # a folder as resolved when the run began, not as typed
            values["data"] = state["data"]
    if from_file:
        _steps_replace_epochs(values, from_file)
        values = {**values, **from_file, "overrides": {**(values.get("overrides") or {}),
                                                       **(from_file.get("overrides") or {})}}
    overrides = dict(values.get("overrides") or {})
    for item in flags.pop("overrides", []):
        key, value = parse_override(item)
        overrides[key] = value
    _steps_replace_epochs(values, flags)
    values.update(flags)
    if overrides:
        values["overrides"] = overrides
    config = config_from_dict(values)
    if not config.model:
        raise UserError(f"--model is required (one of {', '.join(models.KINDS)})")
    return config


def main(argv: list[str]) -> int:
    """`python -m training train ...`; returns the exit code (errors raise UserError)."""
    config = parse_args(argv)
    with stop_on_sigterm():
        train(config, command=["python", "-m", "training", "train", *argv])
    return 0


__all__ = ["FIELDS", "TrainConfig", "main", "model_config_for", "parse_args", "train"]
