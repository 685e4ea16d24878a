"""Models from artifact folders: manifest -> verified graphs -> one ONNX Runtime session per graph.

Provider choice (`Settings.providers`):
- `cpu`: the CPU provider, intra-op threads sized to cores / workers, idle spinning off.
- `auto`: CUDA when this onnxruntime build offers it *and* a session really runs on it, else CPU.
- `cuda`: refuse to start (StartupError) unless every session runs on CUDA.
ONNX Runtime falls back to the CPU silently while still listing CUDA as available, so the provider we
report is `session.get_providers()[0]` of each session, never the requested one.

`Registry.reload` reads the folder again while the old models serve, starts the new ones, and swaps
both maps in one step of the event loop. A model whose new version cannot load keeps its old version.
"""

import asyncio
import itertools
import logging
import math
import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort

from app.batching import Batcher, BatchObserver, Feeds
from app.errors import ModelNotFound, NotReady, OperationNotSupported, StartupError
from app.graphfile import GraphFileError, external_data_files
from app.kinds import ADAPTERS, KindAdapter
from app.manifest import GraphSpec, Manifest, ManifestError, read_manifest, sha256_file, verified_file
from app.settings import Settings

log = logging.getLogger("app.registry")

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def provider_plan(choice: str) -> list[Any]:
    """The provider list handed to ONNX Runtime for a `providers` setting; raises StartupError for
    `cuda` when this onnxruntime build has no CUDA provider at all."""
    available = ort.get_available_providers()
    if choice == "cpu":
        return [CPU]
    if CUDA not in available:
        if choice == "cuda":
            raise StartupError(
                f"AESERVE_PROVIDERS=cuda but this onnxruntime build offers only {available}; "
                "install onnxruntime-gpu on a machine with a GPU, or set AESERVE_PROVIDERS=auto or cpu"
            )
        return [CPU]
    # HEURISTIC: loads in a fraction of EXHAUSTIVE's time and was faster at batch 1 on an H100.
    return [(CUDA, {"cudnn_conv_algo_search": "HEURISTIC"}), CPU]


# Where cgroup v1 mounts the CPU controller: Docker and runc link `cpu` to the joint `cpu,cpuacct`; some
# hosts mount only the joint name, in either order.
_CGROUP_V1_CPU = ("cpu", "cpu,cpuacct", "cpuacct,cpu")


def usable_cores(cgroup: Path = Path("/sys/fs/cgroup")) -> int:
    """The cores this process may use: its CPU affinity, lowered by the cgroup's CPU quota, as a
    container's `cpus` limit sets it: cgroup v2's `cpu.max` ("200000 100000" = 2 cores) or, on hosts
    still on cgroup v1, `cpu.cfs_quota_us` over `cpu.cfs_period_us` (-1 = no limit) in its CPU controller.
    os.cpu_count() counts the host's cores, so replicas with a limit would each size their thread pools
    for the whole host."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota = _cpu_quota(cgroup)
    if quota is not None:
        cores = min(cores, max(1, math.ceil(quota)))
    return max(1, cores)


def _cpu_quota(cgroup: Path) -> float | None:
    """The cgroup's CPU quota in cores, None when there is none or none can be read."""
    try:
        quota, period = (cgroup / "cpu.max").read_text().split()[:2]  # v2
        return None if quota == "max" else int(quota) / int(period)
    except (OSError, ValueError):
        pass
    for name in _CGROUP_V1_CPU:
        try:
            quota_us = int((cgroup / name / "cpu.cfs_quota_us").read_text())
            period_us = int((cgroup / name / "cpu.cfs_period_us").read_text())
        except (OSError, ValueError):
            continue
        return None if quota_us <= 0 or period_us <= 0 else quota_us / period_us
    return None  # no quota to read: the affinity stands


def session_options(settings: Settings, on_cuda: bool) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if not on_cuda:
        cores = usable_cores()
        opts.intra_op_num_threads = settings.intra_op_threads or max(1, cores // settings.workers)
        # Threads that spin between operators start each one sooner than threads woken from sleep, but
        # spinning after a run would burn the cores that decoding and the other workers need: they stop
        # when the last concurrent run returns.
        spin = str(int(settings.intra_op_spinning))
        opts.add_session_config_entry("session.intra_op.allow_spinning", spin)
        opts.add_session_config_entry("session.force_spinning_stop", "1")
    opts.log_severity_level = 3
    return opts


# A CPU run whose inputs hold more values than this (16 MiB of float32; a bulk request of 256 images of
# 64 x 64 RGB is 3.1 M) runs in a session made for it without ONNX Runtime's memory arena (10-20 ms to
# make for the bundled graphs), so its memory goes back to the system when the run's arrays are dropped.
# The served session's arena keeps every size it ever grew to: three full photographs sent to the VQ-VAE
# with fit=none left a server at 10.5 GB. The arena's shrink option cannot free the region a run's outputs
# sit in (2.4 GB stayed), and a throwaway session with an arena did not give its memory back inside the
# server (2.3 GB after one photograph). The price: without the arena, a large run takes 1.5-2x as long
# (fresh pages from the system for every tensor), and runs of the model's own size would be 10-30% slower,
# so they keep it.
LARGE_RUN_VALUES = 4 * 2**20


class GraphSession:
    """One ONNX Runtime session; `run` is synchronous and thread-safe (called from the executor)."""

    def __init__(
        self,
        path: Path,
        settings: Settings,
        plan: list[Any],
        files: Sequence[tuple[Path, str]] = (),
        image_values: Callable[[Feeds], int] | None = None,
    ) -> None:
        """files: what the graph reads, with the sha256 verified at load; a one-off session for a large
        run is made from them only while they still match (a reload may have replaced them). None given
        (a benchmark's own session): the path is taken as it is. image_values: how many image values a
        run's feeds stand for (a token grid decodes to 48 times its size), so that a small input that
        decodes to a large image counts as a large run too."""
        on_cuda = any((p[0] if isinstance(p, tuple) else p) == CUDA for p in plan)
        self.path, self.settings, self.files = path, settings, list(files)
        self.image_values = image_values
        self.session = ort.InferenceSession(str(path), session_options(settings, on_cuda), providers=plan)
        self.provider: str = self.session.get_providers()[0]
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, feeds: Feeds) -> Feeds:
        if self.provider == CUDA:
            # IO binding with device-side outputs, then one copy back: +60% throughput at batch 256
            # on an H100 over letting session.run copy every output through host buffers.
            binding = self.session.io_binding()
            for name, value in feeds.items():
                binding.bind_cpu_input(name, np.ascontiguousarray(value))
            for name in self.output_names:
                binding.bind_output(name, "cuda")
            self.session.run_with_iobinding(binding)
            outputs = binding.copy_outputs_to_cpu()
        elif self._large(feeds) and self._files_unchanged():
            options = session_options(self.settings, on_cuda=False)
            options.enable_cpu_mem_arena = False
            once = ort.InferenceSession(str(self.path), options, providers=[CPU])
            outputs = once.run(self.output_names, feeds)
        else:  # also a large run whose files changed on disk: the loaded session holds the right weights
            outputs = self.session.run(self.output_names, feeds)
        return dict(zip(self.output_names, outputs, strict=True))

    def _large(self, feeds: Feeds) -> bool:
        values = sum(a.size for a in feeds.values())
        return max(values, self.image_values(feeds) if self.image_values else 0) > LARGE_RUN_VALUES

    def _files_unchanged(self) -> bool:
        try:
            return all(sha256_file(path) == sha for path, sha in self.files)
        except OSError:
            return False


@dataclass
class Graph:
    """A served graph: its manifest spec, session and batcher. `v2_name` is `<model>_<graph>`."""

    model: str
    name: str
    v2_name: str
    spec: Any  # app.manifest.GraphSpec
    session: GraphSession
    batcher: Batcher | None = None

    @property
    def provider(self) -> str:
        return self.session.provider


@dataclass
class Model:
    """One artifact folder, ready or unavailable (with the reason)."""

    name: str
    folder: Path
    manifest: Manifest | None = None
    adapter: KindAdapter | None = None
    graphs: dict[str, Graph] = field(default_factory=dict)
    codebook: np.ndarray | None = None
    model_card: str | None = None
    reason: str | None = None
    fingerprint: tuple[str, str] | None = None  # of the folder's files when loaded (see _fingerprint)

    @property
    def version(self) -> str | None:
        """The artifact's identity: the first 16 hex digits of its manifest's sha256, which names the
        sha256 of every graph and array, so any change to a weight is a new version. Sent as
        X-Model-Version."""
        return self.fingerprint[0][:16] if self.fingerprint and self.manifest else None

    @property
    def ready(self) -> bool:
        return self.reason is None and self.manifest is not None

    @property
    def kind(self) -> str | None:
        return self.manifest.kind if self.manifest else None

    def require(self, operation: str) -> tuple[Manifest, KindAdapter]:
        """Manifest and adapter for an operation; OperationNotSupported or NotReady otherwise."""
        if self.adapter is not None and operation not in self.adapter.operations:
            raise OperationNotSupported(
                f"model {self.name!r} ({self.kind}) does not support {operation!r}; "
                f"it supports: {', '.join(self.adapter.operations)}"
            )
        if not self.ready or self.manifest is None or self.adapter is None:
            raise NotReady(f"model {self.name!r} is unavailable: {self.reason}")
        return self.manifest, self.adapter

    async def run(self, graph: str, feeds: Feeds) -> Feeds:
        """Run one graph through its batcher; feeds share axis 0."""
        g = self.graphs[graph]
        if g.batcher is None:
            raise NotReady(f"{g.v2_name} is not started")
        return await g.batcher.submit(feeds)


def _fingerprint(folder: Path) -> tuple[str, str] | None:
    """What a reload compares: the manifest's sha256 (it names every file's sha256) and each file's
    size and modification time (a file replaced in place, checksum or not, is a change)."""
    try:
        stats = sorted(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in folder.iterdir() if p.is_file()
        )
        return sha256_file(folder / "manifest.json"), repr(stats)
    except OSError:
        return None


# ONNX Runtime's names for the element types the manifests use.
_ORT_TYPES = {"tensor(float)": "float32", "tensor(int64)": "int64", "tensor(float16)": "float16"}


def _check_signature(graph: str, spec: GraphSpec, session: ort.InferenceSession) -> None:
    """The manifest's inputs and outputs (names, dtypes, ranks, fixed axes) must be the graph's own: v2
    metadata, request checks and Triton configs are built from the manifest."""
    for side, declared, actual in (
        ("inputs", spec.inputs, session.get_inputs()),
        ("outputs", spec.outputs, session.get_outputs()),
    ):
        mine = [(t.name, t.dtype, len(t.shape)) for t in declared]
        theirs = [(a.name, _ORT_TYPES.get(a.type, a.type), len(a.shape)) for a in actual]
        if sorted(mine) != sorted(theirs):
            raise ManifestError(
                f"graph {graph}: the manifest's {side} {_describe(mine)} "
                f"are not the graph's {_describe(theirs)}"
            )
        # a fixed axis of the graph must be the manifest's too: requests are sized by the manifest
        shapes = {a.name: list(a.shape) for a in actual}
        for t in declared:
            theirs_shape = shapes[t.name]  # of the same rank: checked above
            pairs = zip(t.shape, theirs_shape, strict=True)
            if any(type(g) is int and (type(m) is not int or m != g) for m, g in pairs):
                raise ManifestError(
                    f"graph {graph}: the manifest gives {t.name} the shape {_axes(t.shape)}, "
                    f"the graph {_axes(theirs_shape)}"
                )


def _external_files(graph: str, path: Path, listed: dict[Path, str]) -> list[tuple[Path, str]]:
    """The listed (verified) files, path and sha256, that the graph's tensors are stored in. ONNX
    Runtime opens whatever the graph names, so a file the manifest does not list with a sha256 is
    refused rather than read unchecked."""
    try:
        locations = external_data_files(path)
    except GraphFileError as exc:
        raise ManifestError(f"graph {graph}: {path.name} is not an ONNX file ({exc})") from None
    reads = []
    for location in sorted(locations):
        target = (path.parent / location).resolve()
        if target not in listed:
            raise ManifestError(
                f"graph {graph}: its weights are stored in {location!r}, which the manifest's files "
                "do not list with a sha256"
            )
        reads.append((target, listed[target]))
    return reads


def _axes(shape: Sequence[Any]) -> str:
    return "[" + ", ".join("?" if a is None else str(a) for a in shape) + "]"


def _describe(tensors: list[tuple[str, str, int]]) -> str:
    return ", ".join(f"{name} ({dtype}, rank {rank})" for name, dtype, rank in tensors)


def _artifact_folders(model_dir: Path, *, missing_ok: bool = True) -> list[Path]:
    """The sub-folders of `model_dir` that hold a manifest.json, sorted by name (OSError when the folder
    is missing and not `missing_ok`)."""
    if missing_ok and not model_dir.is_dir():
        return []
    return sorted(p for p in model_dir.iterdir() if p.is_dir() and (p / "manifest.json").exists())


def _claim_names(models: list[Model], owners: dict[str, Path]) -> None:
    """One folder per model name: the one `owners` says serves it now, else the first in folder order.
    Any other folder whose manifest takes that name is a duplicate: unavailable, never started, and
    listed under its folder's name (with a suffix if a model is called that), so that every folder
    shows up once and none displaces another."""
    owner_of = dict(owners)
    for m in models:
        owner_of.setdefault(m.name, m.folder.resolve())
    taken = set(owner_of)
    for m in models:
        owner = owner_of[m.name]
        if owner == m.folder.resolve():
            continue
        m.reason = f"duplicate model name {m.name!r} (also in {owner.name})"
        m.graphs.clear()
        names = itertools.chain([m.folder.name], (f"{m.folder.name}.{i}" for i in itertools.count(2)))
        m.name = next(n for n in names if n not in taken)
        taken.add(m.name)


def _cuda_fallback(model: Model) -> dict[str, str]:
    """Graphs of `model` that did not land on CUDA (AESERVE_PROVIDERS=cuda refuses them)."""
    return {g.v2_name: g.provider for g in model.graphs.values() if g.provider != CUDA}


@dataclass
class ReloadReport:
    """What a reload did, by model name."""

    loaded: list[str] = field(default_factory=list)  # new or changed, now serving the new version
    unchanged: list[str] = field(default_factory=list)  # same manifest: the running version kept
    rejected: dict[str, str] = field(default_factory=dict)  # cannot load: the old version (if any) kept
    removed: list[str] = field(default_factory=list)  # folder gone: no longer served


def _image_values(adapter: KindAdapter, m: Manifest) -> Callable[[Feeds], int]:
    """Feeds -> the values of the images they stand for (pixels x channels, the largest input's): for a
    fully convolutional model, whose token grid or z_e decodes to an image of any size. A fixed-size
    model's runs are bounded by MAX_IMAGES of its own size."""

    def values(feeds: Feeds) -> int:
        return m.channels * max(
            (adapter.pixels(m, n, list(a.shape)) for n, a in feeds.items() if a.ndim), default=0
        )

    return values


def _load(folder: Path, settings: Settings, plan: list[Any]) -> Model:
    """Load one artifact folder; a ManifestError or runtime failure leaves it unavailable."""
    model = Model(name=folder.name, folder=folder, fingerprint=_fingerprint(folder))
    try:
        manifest = read_manifest(folder)
        model.name = manifest.name
        adapter = ADAPTERS.get(manifest.kind)
        if adapter is None:
            raise ManifestError(f"unknown kind {manifest.kind!r} (known: {', '.join(ADAPTERS)})")
        model.manifest, model.adapter = manifest, adapter
        adapter.check(manifest)
        missing = [g for g in adapter.graphs if g not in manifest.graphs]
        if missing:
            raise ManifestError(f"a {manifest.kind} artifact needs graphs {missing} in its manifest")
        missing = [f for f in adapter.files if f not in manifest.files]
        if missing:
            raise ManifestError(f"a {manifest.kind} artifact needs files {missing} in its manifest")
        # every listed file (the graphs' shared weights, the codebook), checked before anything reads it
        paths = {key: verified_file(folder, f["file"], f["sha256"], key) for key, f in manifest.files.items()}
        listed = {paths[key]: f["sha256"] for key, f in manifest.files.items()}
        for g in adapter.served_graphs(manifest):
            spec = manifest.graphs[g]
            path = verified_file(folder, spec.file, spec.sha256, f"graph {g}")
            session = GraphSession(
                path,
                settings,
                plan,
                files=[(path, spec.sha256), *_external_files(g, path, listed)],
                image_values=_image_values(adapter, manifest) if adapter.fully_convolutional else None,
            )
            _check_signature(g, spec, session.session)
            model.graphs[g] = Graph(manifest.name, g, f"{manifest.name}_{g}", spec, session)
        if "codebook" in paths:
            cb = manifest.files["codebook"]
            model.codebook = np.load(paths["codebook"], allow_pickle=False).astype(np.float32)
            size, dim = manifest.latent.get("codebook_size"), manifest.latent.get("code_dim")
            shape = list(model.codebook.shape)
            if len(shape) != 2 or shape[0] != size or dim not in (None, shape[1]):
                raise ManifestError(
                    f"codebook: {cb['file']} holds shape {shape}, not [latent.codebook_size, "
                    f"latent.code_dim] = [{size}, {dim}]"
                )
        if manifest.model_card:
            card = folder / manifest.model_card
            inside = card.is_file() and card.resolve().parent == folder.resolve()
            # a card is documentation: bytes that are not UTF-8 are shown replaced, not a reason to refuse
            model.model_card = card.read_text(errors="replace") if inside else None
        if settings.warmup:
            for g, graph in model.graphs.items():
                graph.session.run(adapter.warmup_feeds(manifest, g))
    except StartupError:
        raise
    except Exception as exc:  # any failure (bad file, runtime load error) makes this model unavailable
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        # clients see the reason (GET /v1/models, 503s): file names within the model, not server paths
        model.reason = reason.replace(str(folder.resolve()), folder.name).replace(str(folder), folder.name)
        model.graphs.clear()
    return model


class Registry:
    """All models of the model directory, and every served graph by its v2 name."""

    def __init__(self, settings: Settings, models: dict[str, Model], available_providers: list[str]) -> None:
        self.settings = settings
        self.models = models
        self.available_providers = available_providers
        self.graphs: dict[str, Graph] = {g.v2_name: g for m in models.values() for g in m.graphs.values()}
        self.executor: ThreadPoolExecutor | None = None
        self.started = False
        self._observer: BatchObserver | None = None
        self._demand: Callable[[], int] | None = None
        self._reload_lock: asyncio.Lock | None = None
        self._retired: list[Batcher] = []

    def not_ready(self) -> str | None:
        """Why the service is not ready, or None: it is starting, or (with `strict_readiness`, as
        Triton's default) some model is unavailable."""
        if not self.started:
            return "the service is starting"
        broken = [m.name for m in self.models.values() if not m.ready]
        if broken and self.settings.strict_readiness:  # names only: the probes need no API key
            return (
                f"model(s) unavailable: {', '.join(broken)} (GET /v1/models gives the reasons; "
                "AESERVE_STRICT_READINESS=false serves the others)"
            )
        return None

    @classmethod
    def load(cls, settings: Settings) -> "Registry":
        """Load every `<model_dir>/<name>/` with a manifest; refuses per the provider and strictness rules."""
        plan = provider_plan(settings.providers)
        models: dict[str, Model] = {}
        if not settings.model_dir.is_dir():
            what = "is not a folder" if settings.model_dir.exists() else "does not exist"
            log.warning("model directory %s %s; serving no models", settings.model_dir, what)
        loaded = [_load(folder, settings, plan) for folder in _artifact_folders(settings.model_dir)]
        _claim_names(loaded, owners={})
        for model in loaded:
            models[model.name] = model
            if model.reason:
                log.warning("model %s unavailable: %s", model.name, model.reason)
                if settings.strict_startup:
                    raise StartupError(f"model {model.name!r} cannot load: {model.reason}")
            if settings.providers == "cuda":
                wrong = _cuda_fallback(model)
                if wrong:
                    raise StartupError(f"AESERVE_PROVIDERS=cuda but ONNX Runtime fell back for {wrong}")
        return cls(settings, models, ort.get_available_providers())

    def start(self, observer: BatchObserver | None = None, demand: Callable[[], int] | None = None) -> None:
        """Create the batchers (needs the running event loop). demand: requests in flight (Batcher)."""
        self.executor = ThreadPoolExecutor(
            max_workers=max(2, min(8, len(self.graphs))), thread_name_prefix="ort"
        )
        self._observer = observer
        self._demand = demand
        for model in self.models.values():
            self._start_model(model)
        self.started = True

    def demand_dropped(self) -> None:
        """A request stopped counting as in flight: every batcher re-checks its wait (Batcher)."""
        for g in self.graphs.values():
            if g.batcher is not None:
                g.batcher.demand_dropped()

    def _start_model(self, model: Model) -> None:
        s = self.settings
        for g in model.graphs.values():
            g.batcher = Batcher(
                g.v2_name,
                g.session.run,
                executor=self.executor,
                max_batch_size=s.max_batch_size,
                max_delay_s=s.max_delay_ms / 1000,
                max_queue=s.max_queue,
                retry_after_s=s.retry_after_s,
                observer=self._observer,
                demand=self._demand,
                inline_when_idle=s.inline_when_idle,
                size_of=g.session.image_values,  # a run holds at most MAX_PIXELS of images
                max_batch_values=s.max_pixels * model.manifest.channels if model.manifest else None,
            )
            g.batcher.start()

    async def reload(self) -> ReloadReport:
        """Read the model folder again and swap in what changed, atomically; serving goes on meanwhile.

        New and changed models load (and warm up) in a thread; one that cannot load is rejected and its
        running version keeps serving. Unchanged manifests keep their sessions. Reloads run one at a time.
        """
        if self._reload_lock is None:
            self._reload_lock = asyncio.Lock()
        async with self._reload_lock:
            current = {m.folder.resolve(): m for m in self.models.values()}
            candidates = await asyncio.to_thread(self._load_changed, current)
            return self._swap(candidates, current)

    def _load_changed(self, current: dict[Path, Model]) -> list[Model]:
        plan = provider_plan(self.settings.providers)
        found: list[Model] = []
        try:  # listed here, in one go: a folder swapped out mid-deploy must unload nothing
            folders = _artifact_folders(self.settings.model_dir, missing_ok=False)
        except OSError as exc:
            raise NotReady(
                "the model directory (AESERVE_MODEL_DIR) is gone or unreadable: nothing was reloaded, "
                "the current models keep serving"
            ) from exc
        for folder in folders:
            old = current.get(folder.resolve())
            if old is not None and old.ready and old.fingerprint == _fingerprint(folder):
                found.append(old)
                continue
            model = _load(folder, self.settings, plan)
            wrong = _cuda_fallback(model) if self.settings.providers == "cuda" else {}
            if wrong:
                model.reason = f"AESERVE_PROVIDERS=cuda but ONNX Runtime fell back for {wrong}"
                model.graphs.clear()
            found.append(model)
        return found

    def _swap(self, candidates: list[Model], current: dict[Path, Model]) -> ReloadReport:
        """Build the new maps, then replace both with no await in between (requests see old or new)."""
        report = ReloadReport()
        models: dict[str, Model] = {}
        # a name stays with the folder that serves it now, changed or not: a newcomer never displaces it
        present = {m.folder.resolve() for m in candidates}
        _claim_names(candidates, owners={m.name: f for f, m in current.items() if m.ready and f in present})
        for model in candidates:
            old = current.get(model.folder.resolve())
            if model is old:
                models[model.name] = model
                report.unchanged.append(model.name)
                continue
            if model.ready:
                self._start_model(model)
                models[model.name] = model
                report.loaded.append(model.name)
                continue
            report.rejected[model.name] = str(model.reason)
            kept = old if old is not None and old.ready else model
            models.setdefault(kept.name, kept)
        replaced = [m for m in self.models.values() if models.get(m.name) is not m]
        self.models = models
        self.graphs = {g.v2_name: g for m in models.values() for g in m.graphs.values()}
        report.removed = [m.name for m in replaced if m.name not in models]
        self._retired = [b for b in self._retired if b.depth or b.running]
        for m in replaced:
            for g in m.graphs.values():
                if g.batcher is not None:
                    g.batcher.retire()
                    self._retired.append(g.batcher)
        return report

    async def stop(self) -> None:
        self.started = False
        for batcher in self._retired:
            await batcher.close()
        for g in self.graphs.values():
            if g.batcher is not None:
                await g.batcher.close()
        if self.executor is not None:
            self.executor.shutdown(wait=False, cancel_futures=True)

    def get(self, name: str) -> Model:
        """The model called `name` (looked up, never used as a path); ModelNotFound otherwise."""
        model = self.models.get(name)
        if model is None:
            known = ", ".join(self.models) or "none"
            raise ModelNotFound(f"no model named {name!r}; models: {known}", field="name")
        return model

    def graph(self, v2_name: str) -> Graph:
        graph = self.graphs.get(v2_name)
        if graph is None:
            raise ModelNotFound(f"no graph named {v2_name!r}; graphs: {', '.join(self.graphs) or 'none'}")
        return graph
