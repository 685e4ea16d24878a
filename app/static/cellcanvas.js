// A canvas showing a grid of cells that the user edits with a pointer (click or drag) or the keyboard
// (arrow keys move a cursor, Enter or Space acts on its cell). The token editor and the mask painter
// are both this, with different cells.

export class CellCanvas {
  constructor(canvas) {
    this.canvas = canvas;
    this.ctx = canvas.getContext("2d");
    this.cursor = [0, 0]; // [row, column]
    this.focused = false;
    this.painting = false;
    this.enabled = true;
    canvas.addEventListener("pointerdown", (e) => this.pointer(e, true));
    canvas.addEventListener("pointermove", (e) => this.painting && this.pointer(e, false));
    const stop = () => (this.painting = false);
    canvas.addEventListener("pointerup", stop);
    canvas.addEventListener("pointercancel", stop);
    canvas.addEventListener("keydown", (e) => this.key(e));
    canvas.addEventListener("focus", () => ((this.focused = true), this.draw()));
    canvas.addEventListener("blur", () => ((this.focused = false), this.draw()));
  }

  /** [rows, columns]; [0, 0] while there is nothing to edit. */
  get gridShape() {
    return [0, 0];
  }

  /** Whether dragging keeps acting on the cells passed over (painting) or only the press counts. */
  get drags() {
    return true;
  }

  /** Act on cell [i, j]; `how` is "press", "drag" or "key". */
  activate(_cell, _how) {}

  draw() {}

  pointer(event, start) {
    const [rows, cols] = this.gridShape;
    if (!rows || !this.enabled) return;
    const rect = this.canvas.getBoundingClientRect();
    const j = Math.floor(((event.clientX - rect.left) / rect.width) * cols);
    const i = Math.floor(((event.clientY - rect.top) / rect.height) * rows);
    if (i < 0 || i >= rows || j < 0 || j >= cols) return;
    if (start) {
      event.preventDefault();
      this.canvas.focus();
      if (this.drags) {
        this.painting = true;
        this.canvas.setPointerCapture?.(event.pointerId);
      }
    }
    this.cursor = [i, j];
    this.activate([i, j], start ? "press" : "drag");
  }

  key(event) {
    const [rows, cols] = this.gridShape;
    if (!rows || !this.enabled) return;
    const moves = { ArrowUp: [-1, 0], ArrowDown: [1, 0], ArrowLeft: [0, -1], ArrowRight: [0, 1] };
    if (moves[event.key]) {
      const [di, dj] = moves[event.key];
      const [i, j] = this.cursor;
      this.cursor = [Math.min(rows - 1, Math.max(0, i + di)), Math.min(cols - 1, Math.max(0, j + dj))];
      this.draw();
    } else if (event.key === "Enter" || event.key === " ") {
      this.activate(this.cursor, "key");
    } else {
      return;
    }
    event.preventDefault();
  }

  /** Outline the keyboard cursor's cell (only while focused: the pointer needs no cursor). */
  drawCursor(cell, color = "#fff", inner = "#000") {
    if (!this.focused || !this.enabled) return;
    const [i, j] = this.cursor;
    const { ctx } = this;
    ctx.lineWidth = 2;
    ctx.strokeStyle = color;
    ctx.strokeRect(j * cell + 1, i * cell + 1, cell - 2, cell - 2);
    if (inner) {
      ctx.strokeStyle = inner;
      ctx.strokeRect(j * cell + 3, i * cell + 3, cell - 6, cell - 6);
    }
    ctx.lineWidth = 1;
  }
}
