// rhythmd interactive charts: each server-drawn SVG chart that has a JSON data block next to it
// is drawn again with uPlot (vendored, static/uPlot.iife.min.js): drag to zoom (every chart of
// the page follows), double-click to zoom out, the values under the cursor in the legend, and
// smoothing. Without scripts, or without uPlot, the SVG stays. Hand-written; text is only ever
// set with textContent.
"use strict";
(function () {
  var SMOOTHING = [0, 0.5, 0.8, 0.9, 0.95, 0.99];
  var KIND_COLORS = { divergence: "#dc2626", stagnation: "#d97706", oscillation: "#7c3aed",
    slow_progress: "#0891b2", spike: "#db2777" };
  var MARK_COLORS = { recommendation: "#ea580c", applied: "#16a34a", rejected: "#9ca3af",
    rollback: "#7c3aed" };
  var charts = {};   // chart id -> uPlot
  var zoom = null;   // [min, max] of the step axis shared by the page's charts; null: all
  var smoothing = 0;
  var syncing = false;

  // The pages' number format (rhythmd.web.fmt.num): 4 significant digits, short exponent.
  function num(v) {
    if (v === null || v === undefined) return "—";
    if (!isFinite(v)) return isNaN(v) ? "NaN" : (v > 0 ? "+Inf" : "-Inf");
    if (v === 0) return "0";
    var parts = v.toExponential(3).split("e"), exp = parseInt(parts[1], 10);
    if (exp < -4 || exp >= 4) {
      return parts[0].replace(/\.?0+$/, "") + "e" + exp;
    }
    return v.toFixed(Math.max(0, 3 - exp)).replace(/(\.\d*?)0+$/, "$1").replace(/\.$/, "");
  }

  // Exponential moving average with TensorBoard's debiasing; gaps stay gaps.
  function smooth(values, w) {
    if (!w) return values;
    var out = new Array(values.length), last = 0, n = 0;
    for (var i = 0; i < values.length; i++) {
      var v = values[i];
      if (v === null) { out[i] = null; continue; }
      last = last * w + (1 - w) * v;
      n += 1;
      out[i] = last / (1 - Math.pow(w, n));
    }
    return out;
  }

  function seriesData(spec) {
    var cols = [spec.x];
    spec.series.forEach(function (s) {
      var vals = s.values;
      if (spec.log) vals = vals.map(function (v) { return v !== null && v > 0 ? v : null; });
      cols.push(spec.smooth && !s.sparse ? smooth(vals, smoothing) : vals);
    });
    return cols;
  }

  // A log axis' bound to one significant digit, outward (uPlot's log ticks can loop forever
  // on a bound just below a power of ten, such as 0.00999).
  function snap(v, up) {
    var p = Math.pow(10, Math.floor(Math.log10(v))), m = v / p;
    m = up ? Math.ceil(m - 1e-9) : Math.max(1, Math.floor(m + 1e-9));
    return parseFloat((m * p).toPrecision(1));
  }

  // y range: the scaled (surviving) series inside the visible steps, padded like the SVG's.
  function yRange(spec) {
    return function (u) {
      var r = yBounds(spec, u);
      return spec.log ? [snap(r[0], false), snap(r[1], true)] : r;
    };
  }

  function yBounds(spec, u) {
    var lo = Infinity, hi = -Infinity, x = u.data[0];
    var x0 = u.scales.x.min, x1 = u.scales.x.max;
    if (x0 === null || x0 === undefined) { x0 = -Infinity; x1 = Infinity; }
    spec.series.forEach(function (s, k) {
      if (!s.scaled) return;
      var col = u.data[k + 1];
      for (var i = 0; i < x.length; i++) {
        var v = col[i];
        if (v === null || x[i] < x0 || x[i] > x1) continue;
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
    });
    spec.references.forEach(function (r) {
      if (r.value !== null && (!spec.log || r.value > 0)) {
        lo = Math.min(lo, r.value); hi = Math.max(hi, r.value);
      }
    });
    if (!(lo <= hi)) return spec.y_range;
    if (spec.log) {
      var pad = Math.max((Math.log10(hi) - Math.log10(lo)) * 0.05, 0.05);
      return [Math.pow(10, Math.log10(lo) - pad), Math.pow(10, Math.log10(hi) + pad)];
    }
    var span = hi - lo || Math.abs(hi) * 0.1 || 1;
    var bottom = lo - span * 0.06;
    return [lo >= 0 && bottom < 0 ? 0 : bottom, hi + span * 0.06];
  }

  function valueAt(u, k, step) {
    var x = u.data[0], col = u.data[k], best = null;
    for (var i = 0; i < x.length && x[i] <= step; i++) if (col[i] !== null) best = col[i];
    return best;
  }

  function drawRegions(spec) {
    return function (u) {
      var ctx = u.ctx, b = u.bbox;
      ctx.save();
      spec.regions.forEach(function (r) {
        var xa = Math.max(u.valToPos(r.start, "x", true), b.left);
        var xb = Math.min(u.valToPos(r.end, "x", true), b.left + b.width);
        if (xb < xa) return;
        ctx.fillStyle = KIND_COLORS[r.kind] || "#6b7280";
        ctx.globalAlpha = r.abandoned ? 0.06 : 0.13;
        ctx.fillRect(xa, b.top, Math.max(xb - xa, 3), b.height);
      });
      ctx.restore();
    };
  }

  function drawMarks(spec) {
    var pins = [], surviving = [];
    spec.series.forEach(function (s, k) { (s.scaled ? surviving : pins).push(k + 1); });
    function yOf(u, ks, step) {
      for (var i = 0; i < ks.length; i++) {
        var v = valueAt(u, ks[i], step);
        if (v !== null) return u.valToPos(v, "y", true);
      }
      return null;
    }
    return function (u) {
      var ctx = u.ctx, b = u.bbox, dpr = devicePixelRatio || 1;
      ctx.save();
      spec.references.forEach(function (r) {
        if (r.value === null) return;
        var y = u.valToPos(r.value, "y", true);
        if (y < b.top || y > b.top + b.height) return;
        ctx.strokeStyle = "#111827"; ctx.globalAlpha = 0.6; ctx.lineWidth = dpr;
        ctx.setLineDash([8 * dpr, 4 * dpr]);
        ctx.beginPath(); ctx.moveTo(b.left, y); ctx.lineTo(b.left + b.width, y); ctx.stroke();
        ctx.globalAlpha = 1; ctx.setLineDash([]); ctx.fillStyle = "#374151";
        ctx.font = (10 * dpr) + "px sans-serif"; ctx.textAlign = "right";
        ctx.fillText(r.label, b.left + b.width - 4 * dpr, y - 4 * dpr);
      });
      spec.markers.forEach(function (m) {
        var x = u.valToPos(m.step, "x", true);
        if (x < b.left - 1 || x > b.left + b.width + 1) return;
        ctx.strokeStyle = ctx.fillStyle = m.color || MARK_COLORS[m.kind] || "#374151";
        ctx.lineWidth = 1.3 * dpr;
        ctx.globalAlpha = m.abandoned ? 0.6 : 1;
        var bottom = b.top + b.height, y = null;
        if (m.kind === "rollback") y = yOf(u, surviving, m.step);
        else if (m.abandoned) y = yOf(u, pins, m.step);
        if (m.kind !== "rollback" && !m.abandoned) {
          ctx.setLineDash([4 * dpr, 3 * dpr]);
          ctx.beginPath(); ctx.moveTo(x, b.top); ctx.lineTo(x, bottom); ctx.stroke();
          ctx.setLineDash([]);
        } else if (y !== null || m.abandoned) {
          y = y === null ? b.top + 7 * dpr : Math.min(Math.max(y, b.top), bottom);
          ctx.beginPath(); ctx.arc(x, y, 3.5 * dpr, 0, 2 * Math.PI); ctx.stroke();
        }
        ctx.beginPath(); ctx.moveTo(x - 5 * dpr, bottom); ctx.lineTo(x + 5 * dpr, bottom);
        ctx.lineTo(x, bottom - 8 * dpr); ctx.closePath(); ctx.fill();
      });
      ctx.restore();
    };
  }

  // Zoom: every chart of the page shows the same steps; the wrapper says which.
  function onScale(u, key) {
    if (key !== "x") return;
    var min = u.scales.x.min, max = u.scales.x.max;
    u.root.parentNode.setAttribute("data-x-min", String(min));
    u.root.parentNode.setAttribute("data-x-max", String(max));
    if (syncing || !u.rhythmdSpec) return;
    var whole = u.rhythmdSpec.x_range;
    zoom = (min <= whole[0] && max >= whole[1]) ? null : [min, max];
    syncing = true;
    Object.keys(charts).forEach(function (id) {
      var o = charts[id];
      if (o !== u) o.setScale("x", { min: min, max: max });
    });
    syncing = false;
  }

  // A click (not a drag) inside a diagnosis region selects it, as a click on its row does.
  function regionClicks(u, spec) {
    var down = null;
    u.over.addEventListener("mousedown", function (ev) { down = [ev.clientX, ev.clientY]; });
    u.over.addEventListener("click", function (ev) {
      if (down && Math.abs(ev.clientX - down[0]) + Math.abs(ev.clientY - down[1]) > 4) return;
      var step = u.posToVal(ev.offsetX, "x"), hit = null;
      spec.regions.forEach(function (r) {
        if (r.start <= step && step <= r.end && (!hit || r.end - r.start < hit.end - hit.start)) {
          hit = r;
        }
      });
      var row = hit && document.querySelector(
        "tr.diag-row[data-diag-id='" + (window.CSS ? CSS.escape(hit.id) : hit.id) + "']");
      if (row) row.click();
    });
  }

  // The title of the marker or region under the mouse, as the SVG's hover titles.
  function hoverTitles(u, spec) {
    u.over.addEventListener("mousemove", function (ev) {
      var step = u.posToVal(ev.offsetX, "x");
      var tol = Math.abs(u.posToVal(ev.offsetX + 4, "x") - step);
      var m = spec.markers.filter(function (mk) { return Math.abs(mk.step - step) <= tol; })[0];
      var r = spec.regions.filter(function (rg) { return rg.start <= step && step <= rg.end; })[0];
      var t = m ? m.title : r ? r.title : "";
      if (t) u.over.setAttribute("title", t); else u.over.removeAttribute("title");
    });
  }

  function build(block) {
    var spec;
    try { spec = JSON.parse(block.textContent); } catch (err) { return; }
    var wrap = block.parentNode, svg = wrap.querySelector("svg.chart");
    var height = svg ? +svg.getAttribute("height") || 230 : 230;
    var host = document.createElement("div");
    host.className = "uplot-wrap";
    host.id = "uplot-" + spec.id;
    wrap.appendChild(host);
    var opts = {
      width: Math.min(wrap.clientWidth || 960, 960), height: height,
      cursor: { sync: { key: "rhythmd" }, drag: { x: true, y: false } },
      scales: { x: { time: false }, y: { distr: spec.log ? 3 : 1, log: 10, range: yRange(spec) } },
      axes: [{ label: "step" }, { label: spec.y_label + (spec.log ? " (log)" : ""), size: 60,
        values: function (u, vals) { return vals.map(num); } }],
      series: [{ label: "step", value: function (u, v) { return v === null ? "—" : String(v); } }]
        .concat(spec.series.map(function (s) {
          return { label: s.label, stroke: s.color, width: s.scaled ? 1.5 : 1.2,
            dash: s.dash ? [5, 4] : undefined, alpha: s.scaled ? 1 : 0.55,
            spanGaps: s.sparse, points: { show: s.sparse },
            value: function (u, v) { return num(v); } };
        })),
      hooks: { drawAxes: [drawRegions(spec)], draw: [drawMarks(spec)], setScale: [onScale] }
    };
    var u = new window.uPlot(opts, seriesData(spec), host);
    u.rhythmdSpec = spec;
    charts[spec.id] = u;
    regionClicks(u, spec);
    hoverTitles(u, spec);
    wrap.classList.add("interactive");
    var range = zoom || spec.x_range;
    u.setScale("x", { min: range[0], max: range[1] });
  }

  function control() {
    var first = document.querySelector(".chart-wrap.interactive");
    if (!first || document.getElementById("smoothing")) return;
    var label = document.createElement("label");
    label.className = "chart-tools";
    label.appendChild(document.createTextNode("Smoothing "));
    var select = document.createElement("select");
    select.id = "smoothing";
    SMOOTHING.forEach(function (w) {
      var o = document.createElement("option");
      o.value = String(w);
      o.textContent = w ? String(w) : "off";
      o.selected = w === smoothing;
      select.appendChild(o);
    });
    select.addEventListener("change", function () {
      smoothing = parseFloat(select.value) || 0;
      Object.keys(charts).forEach(function (id) {
        var u = charts[id];
        if (!u.rhythmdSpec.smooth) return;
        u.setData(seriesData(u.rhythmdSpec), false);
        u.redraw();
      });
      document.body.setAttribute("data-smoothing", String(smoothing));
    });
    label.appendChild(select);
    var hint = document.createElement("span");
    hint.className = "hint";
    hint.textContent = " drag to zoom, double-click to zoom out";
    label.appendChild(hint);
    var panel = first.closest("figure") || first;
    panel.parentNode.insertBefore(label, panel);
  }

  // Draws the charts not drawn yet (all of them at first, those of a refreshed region later);
  // charts whose region was replaced are let go.
  function init() {
    if (typeof window.uPlot !== "function") return;
    Object.keys(charts).forEach(function (id) {
      if (!document.body.contains(charts[id].root)) { charts[id].destroy(); delete charts[id]; }
    });
    document.querySelectorAll("script.chart-data").forEach(function (block) {
      if (!block.parentNode.classList.contains("interactive")) build(block);
    });
    control();
    window.rhythmdCharts = charts;
    document.body.setAttribute("data-charts", String(Object.keys(charts).length));
  }

  document.addEventListener("DOMContentLoaded", init);
  document.addEventListener("rhythmd:refreshed", init);
})();
