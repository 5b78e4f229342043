// The live chart: training loss as it runs (thin), and per epoch the training loss, test loss
// (left axis) and test accuracy (right axis, %), with the epoch on the x axis. A set of models
// draws each figure's mean across the models in a band from the lowest model to the highest.

const COLORS = { running: '#9db4d8', train: '#1f5fbf', test: '#d9480f', accuracy: '#2b8a3e' };

export class Chart {
  constructor(canvas) {
    this.canvas = canvas;
    this.reset(1);
  }

  reset(epochs) {
    this.epochs = epochs;
    this.models = 1;
    this.bands = 0; // bands drawn last time (the browser tests read it)
    this.running = []; // [x in epochs, running loss]
    this.points = []; // {epoch, train, test, accuracy}
    this.draw();
  }

  progress(e) {
    this.running.push([e.epoch + e.step / e.steps, e.loss]);
    this.draw();
  }

  epoch(e) {
    const across = (values) => {
      const v = Array.from(values).filter(Number.isFinite);
      return v.length ? { mean: v.reduce((a, b) => a + b, 0) / v.length, low: Math.min(...v), high: Math.max(...v) } : { mean: NaN, low: NaN, high: NaN };
    };
    const [train, test, accuracy] = [e.models_train_loss, e.models_test_loss, e.models_accuracy].map(across);
    this.models = e.models;
    this.points.push({ x: e.epoch + 1, train: train.mean, test: test.mean, accuracy: accuracy.mean, bands: { train, test, accuracy } });
    this.draw();
  }

  draw() {
    const c = this.canvas.getContext('2d');
    const { width: w, height: h } = this.canvas;
    const pad = { l: 48, r: 48, t: 14, b: 34 };
    c.clearRect(0, 0, w, h);
    const losses = this.running.map((p) => p[1]).concat(this.points.flatMap((p) => [p.bands.train.high, p.bands.test.high]));
    const top = Math.max(0.5, ...losses.filter(Number.isFinite)) * 1.05;
    const X = (x) => pad.l + (x / this.epochs) * (w - pad.l - pad.r);
    const Y = (v) => h - pad.b - (v / top) * (h - pad.t - pad.b);
    const A = (a) => h - pad.b - a * (h - pad.t - pad.b);
    c.strokeStyle = '#c8d0da';
    c.fillStyle = '#5a6475';
    c.font = '12px system-ui, sans-serif';
    c.lineWidth = 1;
    c.strokeRect(pad.l, pad.t, w - pad.l - pad.r, h - pad.t - pad.b);
    for (let i = 0; i <= 4; i++) {
      c.fillText((top * i / 4).toFixed(2), 6, Y(top * i / 4) + 4);
      c.fillText(`${25 * i}%`, w - pad.r + 6, A(i / 4) + 4);
    }
    const step = Math.max(1, Math.ceil(this.epochs / 10));
    for (let e = 0; e <= this.epochs; e += step) c.fillText(String(e), X(e) - 3, h - pad.b + 16);
    c.fillText('epoch', w / 2 - 14, h - 4);
    const line = (pts, color, width) => {
      if (pts.length === 0) return;
      c.strokeStyle = color;
      c.fillStyle = color;
      c.lineWidth = width;
      c.beginPath();
      pts.forEach(([x, y], i) => (i ? c.lineTo(x, y) : c.moveTo(x, y)));
      c.stroke();
      if (width > 1) pts.forEach(([x, y]) => c.fillRect(x - 3, y - 3, 6, 6));
    };
    // The bands first, under the lines: lowest model to highest, per epoch.
    this.bands = 0;
    const band = (key, scale, color) => {
      const pts = this.points.filter((p) => Number.isFinite(p.bands[key].low));
      if (this.models < 2 || pts.length === 0) return;
      c.fillStyle = color + '33';
      if (pts.length === 1) {
        const [x, b] = [X(pts[0].x), pts[0].bands[key]];
        c.fillRect(x - 5, scale(b.high), 10, scale(b.low) - scale(b.high));
      } else {
        c.beginPath();
        pts.forEach((p, i) => (i ? c.lineTo : c.moveTo).call(c, X(p.x), scale(p.bands[key].high)));
        pts.slice().reverse().forEach((p) => c.lineTo(X(p.x), scale(p.bands[key].low)));
        c.closePath();
        c.fill();
      }
      this.bands += 1;
    };
    band('train', Y, COLORS.train);
    band('test', Y, COLORS.test);
    band('accuracy', A, COLORS.accuracy);
    line(this.running.map(([x, v]) => [X(x), Y(v)]), COLORS.running, 1);
    line(this.points.map((p) => [X(p.x), Y(p.train)]), COLORS.train, 2);
    line(this.points.filter((p) => Number.isFinite(p.test)).map((p) => [X(p.x), Y(p.test)]), COLORS.test, 2);
    line(this.points.filter((p) => Number.isFinite(p.accuracy)).map((p) => [X(p.x), A(p.accuracy)]), COLORS.accuracy, 2);
    const legend = [['training loss', COLORS.train], ['test loss', COLORS.test], ['test accuracy', COLORS.accuracy], ['running loss', COLORS.running]];
    legend.forEach(([label, color], i) => {
      c.fillStyle = color;
      c.fillRect(pad.l + 10 + i * 130, pad.t + 8, 12, 4);
      c.fillStyle = '#1d2430';
      c.fillText(label, pad.l + 26 + i * 130, pad.t + 13);
    });
  }
}
