// Painting an MAE patch mask over an image: mask [L] row-major patches, 1 = removed, 0 = kept.

import { CellCanvas } from "./cellcanvas.js";

/**
 * Centre-crop `source` (an ImageBitmap or <img>) to width x height the way the service's default fit
 * does (scale the short side, crop the middle); answers a canvas of exactly that size.
 */
export function centreCrop(source, width, height) {
  const canvas = document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  const sw = source.width;
  const sh = source.height;
  const scale = Math.max(width / sw, height / sh);
  const cw = width / scale;
  const ch = height / scale;
  const ctx = canvas.getContext("2d");
  ctx.fillStyle = "#fff"; // transparency on white, as the service composites it
  ctx.fillRect(0, 0, width, height);
  ctx.imageSmoothingQuality = "high";
  ctx.drawImage(source, (sw - cw) / 2, (sh - ch) / 2, cw, ch, 0, 0, width, height);
  return canvas;
}

export function canvasToBlob(canvas, type = "image/png") {
  return new Promise((resolve, reject) =>
    canvas.toBlob((b) => (b ? resolve(b) : reject(new Error("could not encode the canvas"))), type),
  );
}

export class MaskPainter extends CellCanvas {
  constructor(canvas, onChange) {
    super(canvas);
    this.onChange = onChange || (() => {});
    this.image = null; // canvas at the model's input size
    this.patch = 8;
    this.rows = 0;
    this.cols = 0;
    this.mask = new Uint8Array(0);
    this.erase = false;
  }

  /** `image`: a canvas at the model's input size; `patch`: the patch side in pixels. */
  setImage(image, patch) {
    const rows = Math.floor(image.height / patch);
    const cols = Math.floor(image.width / patch);
    if (rows !== this.rows || cols !== this.cols) this.mask = new Uint8Array(rows * cols);
    Object.assign(this, { image, patch, rows, cols });
    this.draw();
  }

  /** No image: nothing to mask and nothing to send. */
  clearImage() {
    this.image = null;
    this.ctx.clearRect(0, 0, this.canvas.width, this.canvas.height);
  }

  setMask(values) {
    this.mask = Uint8Array.from(values, (v) => (v >= 0.5 ? 1 : 0));
    this.draw();
  }

  clear() {
    this.mask.fill(0);
    this.draw();
    this.onChange(0);
  }

  /** The mask as an image of the input's size, white = missing (the service's `mask` field). */
  maskImage() {
    const canvas = document.createElement("canvas");
    canvas.width = this.image.width;
    canvas.height = this.image.height;
    const ctx = canvas.getContext("2d");
    ctx.fillStyle = "#000";
    ctx.fillRect(0, 0, canvas.width, canvas.height);
    ctx.fillStyle = "#fff";
    this.mask.forEach((v, k) => {
      if (v) ctx.fillRect((k % this.cols) * this.patch, Math.floor(k / this.cols) * this.patch, this.patch, this.patch);
    });
    return canvas;
  }

  get removed() {
    return this.mask.reduce((a, b) => a + b, 0);
  }

  get gridShape() {
    return this.image ? [this.rows, this.cols] : [0, 0];
  }

  activate([i, j], how) {
    const idx = i * this.cols + j;
    // the keyboard toggles; a pointer paints (or erases) every patch it passes over
    const value = how === "key" ? 1 - this.mask[idx] : this.erase ? 0 : 1;
    if (this.mask[idx] !== value) {
      this.mask[idx] = value;
      this.onChange(this.removed);
    }
    this.draw();
  }

  draw() {
    const { canvas, ctx } = this;
    if (!this.image) return;
    const scale = Math.max(1, Math.floor(320 / Math.max(this.image.width, this.image.height)));
    const w = this.image.width * scale;
    const h = this.image.height * scale;
    if (canvas.width !== w || canvas.height !== h) {
      canvas.width = w;
      canvas.height = h;
    }
    ctx.clearRect(0, 0, w, h); // each frame from scratch: grid lines and the cursor never pile up
    ctx.imageSmoothingEnabled = false;
    ctx.drawImage(this.image, 0, 0, w, h);
    const p = this.patch * scale;
    for (let k = 0; k < this.mask.length; k++) {
      if (!this.mask[k]) continue;
      const x = (k % this.cols) * p;
      const y = Math.floor(k / this.cols) * p;
      ctx.fillStyle = "rgb(30 30 40 / 0.78)";
      ctx.fillRect(x, y, p, p);
      ctx.strokeStyle = "rgb(255 255 255 / 0.35)";
      ctx.beginPath(); // a diagonal hatch, so removed patches read as removed even on dark images
      ctx.moveTo(x, y + p);
      ctx.lineTo(x + p, y);
      ctx.stroke();
    }
    ctx.strokeStyle = "rgb(255 255 255 / 0.18)";
    for (let k = 1; k < this.cols; k++) ctx.strokeRect(k * p, 0, 0, h);
    for (let k = 1; k < this.rows; k++) ctx.strokeRect(0, k * p, w, 0);
    this.drawCursor(p, "#ffd23f", null);
  }
}
