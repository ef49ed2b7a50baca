// Pulmo viewer: axial and coronal CT slices on canvas, no library. The server sends raw slices
// (int16 Hounsfield units, uint8 packed labels; see pulmo/web/services/viewer.py); window and
// level are applied here on the real HU values. Decoded slices are kept in memory (LRU, by
// bytes) and the neighbours of the shown slice are fetched ahead, so scrolling is fast.
"use strict";
const PulmoViewer = (() => {
  const PRESETS = { lung: [-600, 1500], mediastinum: [40, 400] };
  const CACHE_BYTES = 160 * 1024 * 1024;
  const PREFETCH = 8;          // slices ahead and behind the shown one
  const PARALLEL = 6;          // requests at once
  const COLOURS = {
    ggo: [255, 210, 0], cons: [230, 40, 40], right: [40, 120, 255], left: [40, 200, 120], nodule: [230, 0, 230],
    cross: [0, 220, 255],
  };
  const REGION_COLOURS = [null, [66, 133, 244], [171, 71, 188], [0, 172, 193], [255, 112, 67], [124, 179, 66],
    [255, 167, 38], [141, 110, 99]];

  // ------------------------------------------------------------------ slice store (cache + queue)
  class Store {
    constructor(base) {
      this.base = base; this.cache = new Map(); this.bytes = 0;
      this.inflight = new Map(); this.queue = []; this.running = 0; this.listeners = new Set();
      this.failed = new Map();   // key -> when it last failed: not asked again for a moment (no request storm)
    }
    key(kind, axis, i) { return `${kind}/${axis}/${i}`; }
    get(kind, axis, i) {
      const k = this.key(kind, axis, i), v = this.cache.get(k);
      if (v) { this.cache.delete(k); this.cache.set(k, v); }   // most recently used last
      return v;
    }
    has(kind, axis, i) { return this.cache.has(this.key(kind, axis, i)); }
    put(k, arr) {
      this.cache.set(k, arr); this.bytes += arr.byteLength;
      for (const [old, a] of this.cache) {
        if (this.bytes <= CACHE_BYTES) break;
        this.cache.delete(old); this.bytes -= a.byteLength;
      }
    }
    // Ask for a slice; urgent ones go first and are never dropped by a new prefetch round.
    want(kind, axis, i, urgent) {
      const k = this.key(kind, axis, i);
      if (this.cache.has(k) || this.inflight.has(k) || Date.now() - (this.failed.get(k) || 0) < 3000) return;
      const queued = this.queue.find(j => j.k === k);
      if (queued) { if (urgent && !queued.urgent) { queued.urgent = true; this.queue.splice(this.queue.indexOf(queued), 1); this.queue.unshift(queued); } return; }
      const job = { k, kind, axis, i, urgent };
      if (urgent) this.queue.unshift(job); else this.queue.push(job);
      this.pump();
    }
    dropPrefetch() { this.queue = this.queue.filter(j => j.urgent); }
    pump() {
      while (this.running < PARALLEL && this.queue.length) {
        const job = this.queue.shift();
        if (this.cache.has(job.k) || this.inflight.has(job.k)) continue;
        this.running++;
        const p = fetch(`${this.base}/${job.kind}/${job.axis}/${job.i}`, { credentials: "same-origin" })
          .then(r => { if (!r.ok) throw new Error(r.status); return r.arrayBuffer(); })
          .then(buf => { this.put(job.k, job.kind === "hu" ? new Int16Array(buf) : new Uint8Array(buf)); return true; })
          .catch(() => { this.failed.set(job.k, Date.now()); return false; })   // asked again when shown again
          .then(ok => {
            this.inflight.delete(job.k); this.running--;
            if (ok) for (const f of this.listeners) f(job.kind, job.axis, job.i);
            this.pump();
          });
        this.inflight.set(job.k, p);
      }
    }
  }

  // ------------------------------------------------------------------ one view (axial or coronal)
  class Pane {
    constructor(viewer, el, axis) {
      const [nz, ny, nx] = viewer.meta.shape, [sz, sy, sx] = viewer.meta.spacing_zyx_mm;
      Object.assign(this, { viewer, el, axis, n: axis === "axial" ? nz : ny, rows: axis === "axial" ? ny : nz,
        cols: nx, rowMm: axis === "axial" ? sy : sz, colMm: sx });
      this.canvas = el.querySelector("canvas");
      this.ctx = this.canvas.getContext("2d");
      this.off = document.createElement("canvas");
      this.off.width = this.cols; this.off.height = this.rows;
      this.offCtx = this.off.getContext("2d");
      this.image = this.offCtx.createImageData(this.cols, this.rows);
      this.slider = el.querySelector(".slice-slider");
      this.slider.max = String(this.n - 1);
      this.number = el.querySelector(".slice-no");
      this.probe = el.querySelector(".probe");
      this.loading = el.querySelector(".loading");
      this.index = 0; this.shown = -1; this.direction = 1; this.wheel = 0;
      this.bind();
    }
    // position in display order (0 = top of the stack): axial from the head down, coronal front to back
    pos() { return this.axis === "axial" ? this.n - 1 - this.index : this.index; }
    fromPos(p) { return this.axis === "axial" ? this.n - 1 - p : p; }
    go(index) {
      index = Math.max(0, Math.min(this.n - 1, Math.round(index)));
      if (index !== this.index) this.direction = Math.sign(index - this.index);
      this.index = index;
      this.slider.value = String(this.pos());
      this.number.textContent = `${this.pos() + 1} / ${this.n}`;
      this.el.dataset.index = String(index);
      this.viewer.changed(this);
    }
    step(d) { this.go(this.fromPos(Math.max(0, Math.min(this.n - 1, this.pos() + d)))); }
    layout() {
      const wrap = this.canvas.parentElement;
      const width = wrap.clientWidth || 300;
      const aspect = (this.rows * this.rowMm) / (this.cols * this.colMm);
      const maxH = Math.max(220, window.innerHeight - (window.innerWidth < 700 ? 260 : 230));
      let w = width, h = width * aspect;
      if (h > maxH) { h = maxH; w = h / aspect; }
      const dpr = window.devicePixelRatio || 1;
      this.canvas.style.width = `${Math.round(w)}px`; this.canvas.style.height = `${Math.round(h)}px`;
      this.canvas.width = Math.max(1, Math.round(w * dpr)); this.canvas.height = Math.max(1, Math.round(h * dpr));
      this.shown = -1;
      this.draw();
    }
    request() {
      const s = this.viewer.store;
      s.want("hu", this.axis, this.index, true);
      s.want("labels", this.axis, this.index, true);
    }
    prefetch() {
      const s = this.viewer.store;
      for (let d = 1; d <= PREFETCH; d++) {
        for (const i of [this.index + d * this.direction, this.index - d * this.direction]) {
          if (i >= 0 && i < this.n) { s.want("hu", this.axis, i, false); s.want("labels", this.axis, i, false); }
        }
      }
    }
    draw() {
      if (this.el.hidden) return;
      const v = this.viewer, s = v.store;
      const hu = s.get("hu", this.axis, this.index), lab = s.get("labels", this.axis, this.index);
      if (!hu || !lab) { this.loading.hidden = false; this.request(); return; }
      this.loading.hidden = true;
      this.compose(hu, lab);
      this.offCtx.putImageData(this.image, 0, 0);
      const c = this.ctx;
      c.imageSmoothingEnabled = true; c.imageSmoothingQuality = "high";
      c.fillStyle = "#000"; c.fillRect(0, 0, this.canvas.width, this.canvas.height);   // nothing of the last slice stays
      c.drawImage(this.off, 0, 0, this.canvas.width, this.canvas.height);
      const other = v.layout === "both" ? v.panes.find(p => p !== this) : null;
      if (other) {   // where the other view cuts this one
        const row = this.axis === "axial" ? other.index : (this.rows - 1 - other.index);
        const y = (row + 0.5) * this.canvas.height / this.rows;
        c.strokeStyle = `rgba(${COLOURS.cross.join(",")},0.7)`; c.lineWidth = Math.max(1, (window.devicePixelRatio || 1));
        c.setLineDash([6, 6]); c.beginPath(); c.moveTo(0, y); c.lineTo(this.canvas.width, y); c.stroke(); c.setLineDash([]);
      }
      this.shown = this.index;
      this.canvas.dataset.drawn = `${this.index}:${v.level}:${v.width}:${v.overlayKey()}`;
    }
    compose(hu, lab) {
      const v = this.viewer, lut = v.lut, on = v.overlays, out = this.image.data;
      const w = this.cols, h = this.rows, n = w * h;
      const aLes = 0.45, aReg = 0.28;
      for (let i = 0, o = 0; i < n; i++, o += 4) {
        let g = lut[Math.max(-1024, Math.min(3071, hu[i])) + 1024];
        let r = g, gg = g, b = g;
        const L = lab[i];
        if (on.regions && (L & 3)) {
          const rc = REGION_COLOURS[(L >> 4) & 7];
          if (rc) { r += (rc[0] - r) * aReg; gg += (rc[1] - gg) * aReg; b += (rc[2] - b) * aReg; }
        }
        if (on.lesions && (L & 12)) {
          const c = ((L >> 2) & 3) === 1 ? COLOURS.ggo : COLOURS.cons;
          r += (c[0] - r) * aLes; gg += (c[1] - gg) * aLes; b += (c[2] - b) * aLes;
        }
        out[o] = r; out[o + 1] = gg; out[o + 2] = b; out[o + 3] = 255;
      }
      if (on.lungs) {   // lung outlines: a lung pixel with a 4-neighbour of another lung label
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            const i = y * w + x, l = lab[i] & 3;
            if (!l) continue;
            if (x === 0 || y === 0 || x === w - 1 || y === h - 1 || (lab[i - 1] & 3) !== l || (lab[i + 1] & 3) !== l ||
                (lab[i - w] & 3) !== l || (lab[i + w] & 3) !== l) {
              const c = l === 1 ? COLOURS.right : COLOURS.left, o = i * 4;
              out[o] = c[0]; out[o + 1] = c[1]; out[o + 2] = c[2];
            }
          }
        }
      }
      if (on.nodules && lab.some(x => x & 128)) {   // nodules: a two-pixel magenta outline around the marked voxels
        for (let y = 0; y < h; y++) {
          for (let x = 0; x < w; x++) {
            const i = y * w + x;
            if (lab[i] & 128) continue;
            let near = false;
            for (let dy = -2; dy <= 2 && !near; dy++) {
              const yy = y + dy;
              if (yy < 0 || yy >= h) continue;
              for (let dx = -2; dx <= 2; dx++) {
                const xx = x + dx;
                if (xx >= 0 && xx < w && (lab[yy * w + xx] & 128) && Math.abs(dx) + Math.abs(dy) <= 2) { near = true; break; }
              }
            }
            if (near) { const o = i * 4, c = COLOURS.nodule; out[o] = c[0]; out[o + 1] = c[1]; out[o + 2] = c[2]; }
          }
        }
      }
    }
    // canvas point (CSS px) -> (row, col) of the slice
    cell(ev) {
      const r = this.canvas.getBoundingClientRect();
      const col = Math.floor((ev.clientX - r.left) / r.width * this.cols);
      const row = Math.floor((ev.clientY - r.top) / r.height * this.rows);
      return (col >= 0 && col < this.cols && row >= 0 && row < this.rows) ? [row, col] : null;
    }
    showProbe(ev) {
      const rc = this.cell(ev), s = this.viewer.store;
      const hu = s.get("hu", this.axis, this.index), lab = s.get("labels", this.axis, this.index);
      if (!rc || !hu || !lab) { this.probe.textContent = ""; return; }
      const i = rc[0] * this.cols + rc[1], L = lab[i], T = this.viewer.labels;
      const parts = [`${hu[i]} HU`];
      if (L & 3) parts.push(this.viewer.regionName((L >> 4) & 7) || ((L & 3) === 1 ? T.right_lung : T.left_lung));
      if (L & 12) parts.push(((L >> 2) & 3) === 1 ? T.ggo : T.consolidation);
      if (L & 128) parts.push(T.nodule);
      this.probe.textContent = parts.join(" · ");
    }
    bind() {
      const c = this.canvas, v = this.viewer;
      this.slider.addEventListener("input", () => this.go(this.fromPos(Number(this.slider.value))));
      c.addEventListener("wheel", (e) => {
        if (e.ctrlKey) return;   // pinch-zoom of the page
        e.preventDefault();
        const unit = e.deltaMode === 1 ? 33 : e.deltaMode === 2 ? 300 : 1;
        this.wheel += e.deltaY * unit;
        const steps = Math.trunc(this.wheel / 100);   // one slice per notch of a mouse wheel
        if (steps) { this.wheel -= steps * 100; this.step(Math.sign(steps) * Math.min(Math.abs(steps), 10)); }
      }, { passive: false });
      c.addEventListener("keydown", (e) => {
        const k = { ArrowDown: 1, ArrowUp: -1, PageDown: 10, PageUp: -10, ArrowRight: 1, ArrowLeft: -1 }[e.key];
        if (k !== undefined) { e.preventDefault(); this.step(k); }
        else if (e.key === "Home") { e.preventDefault(); this.go(this.fromPos(0)); }
        else if (e.key === "End") { e.preventDefault(); this.go(this.fromPos(this.n - 1)); }
      });
      c.addEventListener("contextmenu", (e) => e.preventDefault());
      const pointers = new Map();
      let gesture = null;
      const centre = () => {
        let x = 0, y = 0;
        for (const p of pointers.values()) { x += p.x; y += p.y; }
        return [x / pointers.size, y / pointers.size];
      };
      c.addEventListener("pointerdown", (e) => {
        c.focus({ preventScroll: true });
        try { c.setPointerCapture(e.pointerId); } catch (err) { /* synthetic pointer */ }
        pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
        const [x, y] = centre();
        const wl = pointers.size > 1 || v.mode === "wl" || e.ctrlKey || e.shiftKey || e.altKey || e.button === 2;
        gesture = { kind: wl ? "wl" : "scroll", x0: x, y0: y, moved: 0, level: v.level, width: v.width,
                    pos: this.pos(), n: pointers.size, start: e };
        e.preventDefault();
      });
      c.addEventListener("pointermove", (e) => {
        if (!pointers.has(e.pointerId)) { if (e.pointerType === "mouse") this.showProbe(e); return; }
        pointers.set(e.pointerId, { x: e.clientX, y: e.clientY });
        if (!gesture) return;
        if (pointers.size !== gesture.n) {   // a finger added or lifted: start again from here
          const [x, y] = centre();
          gesture = { ...gesture, kind: pointers.size > 1 ? "wl" : gesture.kind, x0: x, y0: y, level: v.level,
                      width: v.width, pos: this.pos(), n: pointers.size };
        }
        const [x, y] = centre(), dx = x - gesture.x0, dy = y - gesture.y0;
        gesture.moved = Math.max(gesture.moved, Math.abs(dx) + Math.abs(dy));
        if (gesture.kind === "wl") {
          const k = Math.max(1, gesture.width / 256);
          v.setWindow(gesture.level + dy * k, gesture.width + dx * k);
        } else {
          const px = Math.max(3, Math.min(12, c.clientHeight / this.n));
          // finger or mouse moving up goes down the stack (like scrolling a page)
          this.go(this.fromPos(Math.max(0, Math.min(this.n - 1, gesture.pos - Math.round(dy / px)))));
        }
        e.preventDefault();
      });
      const end = (e) => {
        if (!pointers.has(e.pointerId)) return;
        pointers.delete(e.pointerId);
        if (gesture && pointers.size === 0) {
          if (gesture.moved < 4 && gesture.n === 1 && e.type === "pointerup") v.place(this, e);
          gesture = null;
        }
      };
      c.addEventListener("pointerup", end);
      c.addEventListener("pointercancel", end);
      c.addEventListener("pointerleave", () => { if (!pointers.size) this.probe.textContent = ""; });
    }
  }

  // ------------------------------------------------------------------ the viewer
  class Viewer {
    constructor(root, opts) {
      this.root = root; this.meta = opts.meta; this.labels = opts.labels || {};
      this.store = new Store(opts.base || `/api/studies/${opts.studyId}/viewer`);
      this.overlays = { lungs: true, regions: false, lesions: true, nodules: true };
      this.mode = "scroll";
      this.lut = new Uint8ClampedArray(4096);
      this.setWindow(...PRESETS.lung, true);   // the panes draw with it; shown below
      this.panes = [...root.querySelectorAll(".pane")].map(el => new Pane(this, el, el.dataset.axis));
      this.byAxis = Object.fromEntries(this.panes.map(p => [p.axis, p]));
      this.store.listeners.add((kind, axis, i) => {
        const p = this.byAxis[axis];
        if (p && p.index === i && p.shown !== i) p.draw();
      });
      this.bindTools();
      const start = opts.start || {};
      this.byAxis.axial.go(start.axial ?? this.meta.key_slice ?? Math.floor(this.meta.shape[0] / 2));
      this.byAxis.coronal.go(start.coronal ?? Math.floor(this.meta.shape[1] / 2));
      this.setLayout(root.clientWidth >= 860 ? "both" : "axial");
      this.setMode("scroll");
      this.setWindow(...PRESETS.lung);
      let t = null;
      window.addEventListener("resize", () => { clearTimeout(t); t = setTimeout(() => this.relayout(), 120); });
    }
    regionName(label) {
      const r = (this.meta.regions || {})[String(label)];
      return r ? ((this.labels.names || {})[r] || r) : "";
    }
    overlayKey() { return Object.entries(this.overlays).filter(([, on]) => on).map(([k]) => k).join("+") || "none"; }
    setWindow(level, width, quiet) {
      this.width = Math.round(Math.max(1, Math.min(5000, width)));
      this.level = Math.round(Math.max(-1500, Math.min(3000, level)));
      const lo = this.level - this.width / 2;
      for (let i = 0; i < 4096; i++) this.lut[i] = ((i - 1024) - lo) / this.width * 255;
      if (quiet) return;
      const out = this.root.querySelector("#wl-readout");
      if (out) out.textContent = `W ${this.width} · L ${this.level}`;
      for (const b of this.root.querySelectorAll("[data-preset]")) {
        const [l, w] = PRESETS[b.dataset.preset];
        b.setAttribute("aria-pressed", String(l === this.level && w === this.width));
      }
      this.root.dataset.window = `${this.level}/${this.width}`;
      this.redraw();
    }
    setMode(mode) {
      this.mode = mode;
      for (const b of this.root.querySelectorAll("[data-mode]")) b.setAttribute("aria-pressed", String(b.dataset.mode === mode));
      this.root.dataset.mode = mode;
    }
    setLayout(layout) {
      this.layout = layout;
      for (const p of this.panes) p.el.hidden = !(layout === "both" || layout === p.axis);
      for (const b of this.root.querySelectorAll("[data-layout]")) b.setAttribute("aria-pressed", String(b.dataset.layout === layout));
      this.root.dataset.layout = layout;
      this.relayout();
    }
    relayout() {
      if (this.layout === "both" && this.root.clientWidth < 860) { this.setLayout("axial"); return; }
      for (const p of this.panes) if (!p.el.hidden) p.layout();
    }
    redraw() { if (this.panes) for (const p of this.panes) if (!p.el.hidden) { p.shown = -1; p.draw(); } }
    changed(pane) {
      this.store.dropPrefetch();
      for (const p of this.panes) if (!p.el.hidden) p.request();
      pane.draw();
      if (this.layout === "both") for (const p of this.panes) if (p !== pane) { p.shown = -1; p.draw(); }
      for (const p of this.panes) if (!p.el.hidden) p.prefetch();
    }
    place(pane, ev) {   // a click on one view moves the other one there
      const rc = pane.cell(ev);
      if (!rc || this.layout !== "both") return;
      if (pane.axis === "axial") this.byAxis.coronal.go(rc[0]);
      else this.byAxis.axial.go(this.meta.shape[0] - 1 - rc[0]);
    }
    goTo(z, y) {
      if (z !== undefined && z !== null) this.byAxis.axial.go(z);
      if (y !== undefined && y !== null) this.byAxis.coronal.go(y);
      if (this.layout === "coronal") this.setLayout("axial");
      this.byAxis.axial.canvas.scrollIntoView({ block: "nearest", behavior: "smooth" });
    }
    bindTools() {
      const r = this.root;
      for (const b of r.querySelectorAll("[data-preset]")) b.addEventListener("click", () => this.setWindow(...PRESETS[b.dataset.preset]));
      for (const b of r.querySelectorAll("[data-mode]")) b.addEventListener("click", () => this.setMode(b.dataset.mode));
      for (const b of r.querySelectorAll("[data-layout]")) b.addEventListener("click", () => this.setLayout(b.dataset.layout));
      for (const cb of r.querySelectorAll("[data-overlay]")) {
        cb.checked = this.overlays[cb.dataset.overlay];
        cb.addEventListener("change", () => { this.overlays[cb.dataset.overlay] = cb.checked; this.root.dataset.overlays = this.overlayKey(); this.redraw(); });
      }
      this.root.dataset.overlays = this.overlayKey();
    }
  }

  return { create: (root, opts) => new Viewer(root, opts), PRESETS };
})();
