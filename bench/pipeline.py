"""The raw engine a served operation is compared with: the same graphs, the same session options and
thread budget (app.registry.GraphSession), the same per-kind steps (app.kinds adapters), run directly
on the calling thread with no HTTP, no queue and no batcher.

Two variants per batch size: `png=False` feeds arrays and keeps the outputs as arrays; `png=True` also
decodes the uploads the way the service does (app.imaging.load_fitted) and encodes image outputs as PNG
(app.imaging.png_bytes), so the ratio to the service can be read with or without that fixed cost.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from bench.engine import graph_session, measure, row

OPERATIONS = ("reconstruct", "tokens")


class DirectRunner:
    """A loaded artifact whose `run` calls the graph's session at once (app.kinds.GraphRunner)."""

    def __init__(
        self,
        folder: Path,
        provider: str,
        files: dict[str, Path] | None = None,
        server_env: Mapping[str, str] | None = None,
    ) -> None:
        """files: graph -> another .onnx file for that graph (e.g. its fp16 copy); server_env: the service's
        extra AESERVE_* settings (bench.engine.graph_session)."""
        from app.kinds import ADAPTERS
        from app.manifest import read_manifest

        self.manifest = read_manifest(folder)
        self.adapter = ADAPTERS[self.manifest.kind]
        graphs = self.adapter.served_graphs(self.manifest)
        files = {g: folder / self.manifest.graphs[g].file for g in graphs} | (files or {})
        self.sessions = {g: graph_session(files[g], provider, server_env) for g in graphs}
        self.provider = next(iter(self.sessions.values())).provider

    async def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return self.sessions[graph].run(feeds)


def operation(runner: DirectRunner, op: str) -> Callable[[np.ndarray], np.ndarray]:
    """x float32 [N, C, H, W] -> the operation's main output (reconstruct: images; tokens: [N, h, w])."""
    if op not in runner.adapter.operations:
        raise ValueError(f"{runner.manifest.kind} has no operation {op!r}")
    loop = asyncio.new_event_loop()
    if op == "reconstruct":
        return lambda x: loop.run_until_complete(runner.adapter.reconstruct(runner, x))
    return lambda x: loop.run_until_complete(runner.adapter.encode(runner, x))["tokens"]


def with_png(
    runner: DirectRunner, op: str, fn: Callable[[np.ndarray], np.ndarray]
) -> Callable[[list[bytes]], Any]:
    """The operation on PNG files: decode and fit each (as the service does), run, PNG-encode images."""
    from app import imaging

    m = runner.manifest

    def run(pngs: list[bytes]) -> Any:
        x = np.stack(
            [
                imaging.load_fitted(
                    b,
                    height=m.height,
                    width=m.width,
                    channels=m.channels,
                    mode="center-crop",
                    max_pixels=1 << 24,
                ).array
                for b in pngs
            ]
        )
        out = fn(x)
        return [imaging.png_bytes(i) for i in out] if op == "reconstruct" else out

    return run


def engine_rows(
    folder: Path,
    ops: Sequence[str],
    *,
    batches: Sequence[int],
    seconds: float,
    provider: str,
    pngs: list[bytes],
    arrays: np.ndarray,
    server_env: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Rows (op, png, batch -> images/s, latency) of the raw engine; pngs/arrays: the request payloads;
    server_env: the service's extra AESERVE_* settings, so both sides run the same session options."""
    runner = DirectRunner(folder, provider, server_env=server_env)
    rows = []
    for op in ops:
        fn = operation(runner, op)
        png_fn = with_png(runner, op, fn)
        for batch in batches:
            x = np.concatenate([arrays] * -(-batch // len(arrays)))[:batch]
            files = (pngs * -(-batch // len(pngs)))[:batch]
            labels = {"model": runner.manifest.name, "op": op, "provider": runner.provider}
            rows.append(row(batch, measure(partial(fn, x), seconds=seconds), **labels, png=False))
            rows.append(row(batch, measure(partial(png_fn, files), seconds=seconds), **labels, png=True))
    return rows
