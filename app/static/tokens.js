// VQ-VAE token grids as pictures: colours for codebook entries, an editable grid, and a palette.

import { CellCanvas } from "./cellcanvas.js";

/**
 * One colour per codebook entry, [K] of [r, g, b] in 0..255: the codebook's top three principal
 * components mapped to RGB, so codes with nearby vectors get nearby colours.
 * `codebook` is [K][D] numbers; falls back to evenly spread hues when it is missing or degenerate.
 */
export function codebookColors(codebook, size) {
  if (!Array.isArray(codebook) || codebook.length < 2 || !Array.isArray(codebook[0])) {
    return hueColors(size || 0);
  }
  const k = codebook.length;
  const d = codebook[0].length;
  const mean = new Float64Array(d);
  for (const row of codebook) for (let j = 0; j < d; j++) mean[j] += row[j] / k;
  const centred = codebook.map((row) => Float64Array.from(row, (v, j) => v - mean[j]));
  const components = [];
  for (let c = 0; c < Math.min(3, d); c++) {
    const v = powerIteration(centred, components, d, c);
    if (!v) break;
    components.push(v);
  }
  if (components.length === 0) return hueColors(k);
  const projected = centred.map((row) => components.map((v) => dot(row, v)));
  const ranges = components.map((_, c) => {
    const values = projected.map((p) => p[c]);
    return [Math.min(...values), Math.max(...values)];
  });
  return projected.map((p) =>
    [0, 1, 2].map((c) => {
      if (c >= p.length) return 128;
      const [lo, hi] = ranges[c];
      // keep away from pure black/white so cells stay distinguishable from the grid lines
      return Math.round(30 + 200 * (hi > lo ? (p[c] - lo) / (hi - lo) : 0.5));
    }),
  );
}

function dot(a, b) {
  let s = 0;
  for (let i = 0; i < a.length; i++) s += a[i] * b[i];
  return s;
}

// The leading eigenvector of the rows' covariance, orthogonal to `found`; deterministic start.
function powerIteration(rows, found, d, salt) {
  let v = Float64Array.from({ length: d }, (_, j) => Math.cos(1 + j * (salt + 1.7)));
  for (let it = 0; it < 60; it++) {
    const next = new Float64Array(d);
    for (const row of rows) {
      const s = dot(row, v);
      for (let j = 0; j < d; j++) next[j] += s * row[j];
    }
    for (const u of found) {
      const s = dot(next, u);
      for (let j = 0; j < d; j++) next[j] -= s * u[j];
    }
    const norm = Math.sqrt(dot(next, next));
    if (!(norm > 1e-12)) return null;
    v = next.map((x) => x / norm);
  }
  return v;
}

function hueColors(k) {
  return Array.from({ length: k }, (_, i) => hslToRgb((i * 0.61803398875) % 1, 0.62, 0.55));
}

function hslToRgb(h, s, l) {
  const f = (n) => {
    const t = (n + h * 12) % 12;
    return Math.round(255 * (l - s * Math.min(l, 1 - l) * Math.max(-1, Math.min(t - 3, 9 - t, 1))));
  };
  return [f(0), f(8), f(4)];
}

export const cssColor = ([r, g, b]) => `rgb(${r} ${g} ${b})`;

/** An editable token grid drawn on a canvas: pointer painting, keyboard cursor, edit marks. */
export class TokenEditor extends CellCanvas {
  constructor(canvas, { onPick, onEdit } = {}) {
    super(canvas);
    this.onPick = onPick || (() => {});
    this.onEdit = onEdit || (() => {});
    this.tokens = null; // [H][W] ints, current
    this.original = null; // [H][W] ints, as encoded
    this.colors = [];
    this.code = 0;
    this.tool = "paint"; // or "pick"
  }

  setGrid(tokens, colors) {
    this.original = tokens.map((row) => row.slice());
    this.tokens = tokens.map((row) => row.slice());
    this.colors = colors;
    this.cursor = [0, 0];
    this.draw();
  }

  reset() {
    if (!this.original) return;
    this.tokens = this.original.map((row) => row.slice());
    this.draw();
    this.onEdit(0);
  }

  get edits() {
    if (!this.tokens) return 0;
    let n = 0;
    this.tokens.forEach((row, i) => row.forEach((t, j) => (n += t !== this.original[i][j])));
    return n;
  }

  get gridShape() {
    return this.tokens ? [this.tokens.length, this.tokens[0].length] : [0, 0];
  }

  get drags() {
    return this.tool === "paint";
  }

  activate([i, j]) {
    if (this.tool === "pick") {
      this.onPick(this.tokens[i][j]);
    } else if (this.tokens[i][j] !== this.code) {
      this.tokens[i][j] = this.code;
      this.onEdit(this.edits);
    }
    this.draw();
  }

  draw() {
    const { canvas, ctx } = this;
    if (!this.tokens) return;
    const [h, w] = this.gridShape;
    const cell = Math.max(4, Math.floor(320 / Math.max(h, w)));
    if (canvas.width !== w * cell || canvas.height !== h * cell) {
      canvas.width = w * cell;
      canvas.height = h * cell;
    }
    const mark = Math.max(3, Math.floor(cell / 4));
    for (let i = 0; i < h; i++) {
      for (let j = 0; j < w; j++) {
        const t = this.tokens[i][j];
        ctx.fillStyle = cssColor(this.colors[t] || [128, 128, 128]);
        ctx.fillRect(j * cell, i * cell, cell, cell);
        if (t !== this.original[i][j]) {
          // an edited cell: a white square with a black rim in its corner, visible on any colour
          ctx.fillStyle = "#fff";
          ctx.fillRect(j * cell + 1, i * cell + 1, mark, mark);
          ctx.strokeStyle = "#000";
          ctx.strokeRect(j * cell + 1.5, i * cell + 1.5, mark - 1, mark - 1);
        }
      }
    }
    this.drawCursor(cell);
  }
}

/** The codebook as a strip of swatches; click (or arrow keys when focused) chooses a code. */
export class CodebookPalette {
  constructor(canvas, onChoose) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.onChoose = onChoose;
    this.colors = [];
    this.selected = 0;
    canvas.addEventListener("click", (e) => {
      const code = this.codeAt(e);
      if (code !== null) this.onChoose(code);
    });
    canvas.addEventListener("keydown", (e) => {
      const step = { ArrowLeft: -1, ArrowRight: 1, ArrowUp: -this.columns, ArrowDown: this.columns }[e.key];
      if (step === undefined || !this.colors.length) return;
      e.preventDefault();
      this.onChoose(Math.min(this.colors.length - 1, Math.max(0, this.selected + step)));
    });
  }

  get columns() {
    return Math.min(32, Math.max(1, this.colors.length));
  }

  setColors(colors) {
    this.colors = colors;
    this.draw();
  }

  select(code) {
    this.selected = code;
    this.draw();
  }

  codeAt(event) {
    const rect = this.canvas.getBoundingClientRect();
    const rows = Math.ceil(this.colors.length / this.columns);
    const j = Math.floor(((event.clientX - rect.left) / rect.width) * this.columns);
    const i = Math.floor(((event.clientY - rect.top) / rect.height) * rows);
    const code = i * this.columns + j;
    return code >= 0 && code < this.colors.length ? code : null;
  }

  draw() {
    const { canvas, ctx, colors } = this;
    if (!colors.length) return;
    const cols = this.columns;
    const rows = Math.ceil(colors.length / cols);
    const cell = 10;
    canvas.width = cols * cell;
    canvas.height = rows * cell;
    colors.forEach((c, code) => {
      ctx.fillStyle = cssColor(c);
      ctx.fillRect((code % cols) * cell, Math.floor(code / cols) * cell, cell, cell);
    });
    const x = (this.selected % cols) * cell;
    const y = Math.floor(this.selected / cols) * cell;
    ctx.lineWidth = 2;
    ctx.strokeStyle = "#000";
    ctx.strokeRect(x + 1, y + 1, cell - 2, cell - 2);
    ctx.strokeStyle = "#fff";
    ctx.lineWidth = 1;
    ctx.strokeRect(x + 2.5, y + 2.5, cell - 5, cell - 5);
  }
}
