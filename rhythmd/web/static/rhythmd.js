// rhythmd pages: table sorting, compare selection, diagnosis evidence, crosshair, live refresh.
// Hand-written, no dependencies. Text is only ever set with textContent (never innerHTML from
// data); refreshed regions are copied from the server's own escaped HTML.
"use strict";
(function () {
  var sortState = null; // {col, dir}
  var selectedDiag = null;
  var served = {}; // live region id -> the server's HTML of it, as last received
  document.querySelectorAll("[data-live-region]").forEach(function (el) {
    if (el.id) served[el.id] = el.innerHTML;  // before any script changes it
  });

  function cellValue(row, col, numeric) {
    var cell = row.cells[col];
    if (!cell) return numeric ? -Infinity : "";
    var v = cell.getAttribute("data-value");
    if (v === null) v = cell.textContent.trim();
    if (!numeric) return v.toLowerCase();
    var n = parseFloat(v);
    return isNaN(n) ? -Infinity : n;
  }

  function sortTable(table, col, dir) {
    var th = table.tHead.rows[0].cells[col];
    var numeric = th.getAttribute("data-sort") === "num";
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows).filter(function (r) {
      return !r.classList.contains("empty");
    });
    rows.sort(function (a, b) {
      var x = cellValue(a, col, numeric), y = cellValue(b, col, numeric);
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (c) {
      if (c.hasAttribute("data-sort")) c.removeAttribute("aria-sort");
    });
    th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    sortState = { col: col, dir: dir };
  }

  function initSorting() {
    document.querySelectorAll("table.sortable").forEach(function (table) {
      Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, col) {
        if (!th.hasAttribute("data-sort")) return;
        th.addEventListener("click", function () {
          var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
          sortTable(table, col, dir);
        });
      });
    });
  }

  function selectedRuns() {
    return Array.prototype.map.call(
      document.querySelectorAll("input.run-select:checked"), function (i) { return i.value; });
  }

  function updateCompareButton() {
    var btn = document.getElementById("compare-button");
    if (!btn) return;
    var n = selectedRuns().length;
    btn.disabled = n < 1;
    btn.textContent = n ? "Compare selected (" + n + ")" : "Compare selected";
  }

  function initCompare() {
    var form = document.getElementById("compare-form");
    if (!form) return;
    form.addEventListener("change", updateCompareButton);
    form.addEventListener("submit", function (ev) {
      ev.preventDefault();
      var ids = selectedRuns();
      if (!ids.length) return;
      window.location.href = "/compare?runs=" + ids.map(encodeURIComponent).join(",");
    });
    updateCompareButton();
  }

  function showDiagnosis(id) {
    selectedDiag = id;
    var found = false;
    document.querySelectorAll("[data-evidence-for]").forEach(function (el) {
      var on = el.getAttribute("data-evidence-for") === id;
      el.hidden = !on;
      if (on) found = true;
    });
    var empty = document.getElementById("evidence-empty");
    if (empty) empty.hidden = found;
    document.querySelectorAll("[data-diag-id]").forEach(function (el) {
      el.classList.toggle("selected", el.getAttribute("data-diag-id") === id);
    });
    var panel = document.getElementById("evidence-panel");
    if (panel) panel.setAttribute("data-selected", id);
  }

  function initEvidence() {
    document.addEventListener("click", function (ev) {
      var el = ev.target.closest ? ev.target.closest("[data-diag-id]") : null;
      if (el) showDiagnosis(el.getAttribute("data-diag-id"));
    });
    document.addEventListener("keydown", function (ev) {
      if (ev.key !== "Enter" && ev.key !== " ") return;
      var el = ev.target.closest ? ev.target.closest("[data-diag-id]") : null;
      if (el) { ev.preventDefault(); showDiagnosis(el.getAttribute("data-diag-id")); }
    });
  }

  function initCrosshair() {
    var tip = document.getElementById("step-tip");
    if (!tip) {
      tip = document.createElement("div");
      tip.id = "step-tip";
      tip.hidden = true;
      document.body.appendChild(tip);
    }
    document.querySelectorAll("svg.chart").forEach(function (svg) {
      if (svg.getAttribute("data-crosshair")) return;
      svg.setAttribute("data-crosshair", "1");
      svg.addEventListener("mousemove", function (ev) {
        var box = svg.getBoundingClientRect();
        var vb = svg.viewBox.baseVal;
        var x = (ev.clientX - box.left) * vb.width / box.width;
        var left = +svg.getAttribute("data-left"), width = +svg.getAttribute("data-width");
        var x0 = +svg.getAttribute("data-x0"), x1 = +svg.getAttribute("data-x1");
        if (x < left || x > left + width) { hideCrosshair(); return; }
        var step = Math.round(x0 + (x - left) / width * (x1 - x0));
        document.querySelectorAll("svg.chart").forEach(function (other) {
          var line = other.querySelector(".crosshair");
          if (!line || other.getAttribute("data-x0") !== svg.getAttribute("data-x0") ||
              other.getAttribute("data-x1") !== svg.getAttribute("data-x1")) return;
          line.setAttribute("x1", x); line.setAttribute("x2", x);
          line.classList.add("on");
        });
        tip.textContent = "step " + step;
        tip.style.left = (ev.clientX + 12) + "px";
        tip.style.top = (ev.clientY + 12) + "px";
        tip.hidden = false;
      });
      svg.addEventListener("mouseleave", hideCrosshair);
    });
    function hideCrosshair() {
      document.querySelectorAll("svg.chart .crosshair").forEach(function (l) {
        l.classList.remove("on");
      });
      tip.hidden = true;
    }
  }

  function localTimes() {
    var now = Date.now() / 1000;
    document.querySelectorAll("time[data-ts]").forEach(function (t) {
      var ts = parseFloat(t.getAttribute("data-ts"));
      if (isNaN(ts)) return;
      var d = new Date(ts * 1000), age = Math.max(0, now - ts), rel;
      if (age < 60) rel = Math.round(age) + " s ago";
      else if (age < 3600) rel = Math.round(age / 60) + " min ago";
      else if (age < 86400) rel = Math.round(age / 3600) + " h ago";
      else rel = Math.round(age / 86400) + " d ago";
      t.textContent = d.toLocaleString() + " (" + rel + ")";
    });
  }

  function restoreState() {
    var checked = {};
    return {
      save: function () {
        selectedRuns().forEach(function (id) { checked[id] = true; });
      },
      apply: function () {
        document.querySelectorAll("input.run-select").forEach(function (i) {
          i.checked = !!checked[i.value];
        });
        updateCompareButton();
        var table = document.getElementById("runs-table");
        if (table && sortState) sortTable(table, sortState.col, sortState.dir);
        if (selectedDiag) showDiagnosis(selectedDiag);
        localTimes();
        initCrosshair();
      }
    };
  }

  function initRefresh() {
    var period = parseInt(document.body.getAttribute("data-refresh") || "0", 10);
    if (!period) return;
    var indicator = document.getElementById("live-indicator");
    if (indicator) indicator.hidden = false;
    var state = restoreState();
    var busy = false;
    var timer = setInterval(function () {
      if (document.hidden || busy) return;
      busy = true;
      fetch(window.location.href, { headers: { "X-Rhythmd-Refresh": "1" } })
        .then(function (r) { return r.ok ? r.text() : null; })
        .then(function (text) {
          if (text === null) return;
          var doc = new DOMParser().parseFromString(text, "text/html");
          state.save();
          document.querySelectorAll("[data-live-region]").forEach(function (el) {
            var fresh = el.id ? doc.getElementById(el.id) : null;
            // unchanged regions stay as they are (a chart being zoomed is not redrawn)
            if (!fresh || served[el.id] === fresh.innerHTML) return;
            served[el.id] = fresh.innerHTML;
            el.innerHTML = fresh.innerHTML;
          });
          ["run-status"].forEach(function (id) {
            var cur = document.getElementById(id), fresh = doc.getElementById(id);
            if (cur && fresh) cur.outerHTML = fresh.outerHTML;
          });
          state.apply();
          document.dispatchEvent(new Event("rhythmd:refreshed"));  // charts are drawn anew
          document.body.setAttribute("data-refreshed", String(Date.now()));
          if (!doc.body.getAttribute("data-refresh")) {
            clearInterval(timer);
            if (indicator) indicator.hidden = true;
          }
        })
        .catch(function () { /* the daemon may be restarting: try again next period */ })
        .then(function () { busy = false; });
    }, period);
  }

  document.addEventListener("DOMContentLoaded", function () {
    initSorting();
    initCompare();
    initEvidence();
    initCrosshair();
    localTimes();
    initRefresh();
    document.body.setAttribute("data-ready", "1");
  });
})();
