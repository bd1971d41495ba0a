// distqueue dashboard: live counters (Server-Sent Events), the throughput chart,
// confirmations and "select all". Plain script, no framework; it only ever sets
// textContent, never HTML, so job data stays text.
"use strict";
(function () {
  var HISTORY = 300;
  var history = [];
  var source = null;

  function each(selector, fn) {
    Array.prototype.forEach.call(document.querySelectorAll(selector), fn);
  }

  // -- the chart ---------------------------------------------------------------------
  // history points: [epoch s, succeeded total, dead total, submitted total, queued, mean s|null]

  function series(points) {
    var out = [];
    for (var i = 1; i < points.length; i++) {
      var a = points[i - 1], b = points[i];
      var dt = b[0] - a[0];
      if (dt <= 0) continue;
      out.push({
        t: b[0],
        ok: Math.max(0, (b[1] - a[1]) / dt),
        dead: Math.max(0, (b[2] - a[2]) / dt),
        mean: b[5]
      });
    }
    return out;
  }

  function niceMax(v) {
    if (!(v > 0)) return 1;
    var p = Math.pow(10, Math.floor(Math.log10(v)));
    var steps = [1, 2, 2.5, 5, 10];
    for (var i = 0; i < steps.length; i++) if (steps[i] * p >= v) return steps[i] * p;
    return 10 * p;
  }

  function fmt(v) {
    if (v >= 100) return v.toFixed(0);
    if (v >= 10) return v.toFixed(1);
    if (v >= 1) return v.toFixed(1);
    return v.toPrecision(2);
  }

  function draw() {
    var canvas = document.getElementById("chart");
    if (!canvas || !canvas.getContext) return;
    var ratio = window.devicePixelRatio || 1;
    var w = canvas.clientWidth || canvas.width, h = canvas.clientHeight || canvas.height;
    if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
    if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
    var ctx = canvas.getContext("2d");
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, w, h);
    var left = 48, right = 52, top = 12, bottom = 26;
    var pw = w - left - right, ph = h - top - bottom;
    var data = series(history);
    ctx.font = "11px system-ui, sans-serif";
    ctx.fillStyle = "#66707a";
    if (data.length < 1) {
      ctx.fillText("collecting data: a point a second", left + 8, top + ph / 2);
      return;
    }
    var t1 = data[data.length - 1].t, t0 = Math.min(data[0].t, t1 - 60);
    var rateMax = 0, meanMax = 0;
    data.forEach(function (d) {
      rateMax = Math.max(rateMax, d.ok, d.dead);
      if (d.mean !== null && d.mean !== undefined) meanMax = Math.max(meanMax, d.mean);
    });
    rateMax = niceMax(rateMax);
    meanMax = niceMax(meanMax);
    function x(t) { return left + (pw * (t - t0)) / Math.max(t1 - t0, 1e-9); }
    function yRate(v) { return top + ph - (ph * v) / rateMax; }
    function yMean(v) { return top + ph - (ph * v) / meanMax; }
    // grid and axes
    ctx.strokeStyle = "#e4e7eb";
    ctx.lineWidth = 1;
    for (var g = 0; g <= 4; g++) {
      var gy = top + (ph * g) / 4;
      ctx.beginPath(); ctx.moveTo(left, gy); ctx.lineTo(left + pw, gy); ctx.stroke();
      ctx.fillStyle = "#1a7f37";
      ctx.textAlign = "right";
      ctx.fillText(fmt((rateMax * (4 - g)) / 4), left - 6, gy + 4);
      ctx.fillStyle = "#1f6feb";
      ctx.textAlign = "left";
      ctx.fillText(fmt((meanMax * (4 - g)) / 4) + " s", left + pw + 6, gy + 4);
    }
    ctx.fillStyle = "#66707a";
    ctx.textAlign = "center";
    var span = t1 - t0;
    for (var k = 0; k <= 4; k++) {
      var tk = t0 + (span * k) / 4;
      ctx.fillText("-" + Math.round(t1 - tk) + " s", x(tk), top + ph + 16);
    }
    ctx.textAlign = "left";
    function line(color, pick, y) {
      ctx.strokeStyle = color;
      ctx.lineWidth = 2;
      ctx.beginPath();
      var started = false;
      data.forEach(function (d) {
        var v = pick(d);
        if (v === null || v === undefined) { started = false; return; }
        if (started) ctx.lineTo(x(d.t), y(v)); else ctx.moveTo(x(d.t), y(v));
        started = true;
      });
      ctx.stroke();
    }
    line("#1a7f37", function (d) { return d.ok; }, yRate);
    line("#c62828", function (d) { return d.dead; }, yRate);
    line("#1f6feb", function (d) { return d.mean; }, yMean);
  }

  // -- live updates ------------------------------------------------------------------

  function setText(el, text) {
    if (el.textContent !== text) el.textContent = text;
  }

  function duration(s) {
    if (s < 1) return (s * 1000).toFixed(1) + " ms";
    if (s < 120) return s.toFixed(2) + " s";
    if (s < 7200) return (s / 60).toFixed(1) + " min";
    return (s / 3600).toFixed(1) + " h";
  }

  // the queue table gets a row for a queue that appears, loses one that empties
  function queueRows(queues) {
    var table = document.querySelector("table[data-queues]");
    if (!table) return;
    var names = Object.keys(queues).sort();
    var have = [];
    each("tr[data-queue-row]", function (tr) { have.push(tr.getAttribute("data-queue-row")); });
    if (have.join("\n") === names.join("\n")) return;
    var states = table.getAttribute("data-states").split(",");
    var body = table.tBodies[0];
    while (body.firstChild) body.removeChild(body.firstChild);
    names.forEach(function (name) {
      var tr = document.createElement("tr");
      tr.setAttribute("data-queue-row", name);
      var q = encodeURIComponent(name);
      var cell = document.createElement("td");
      var link = document.createElement("a");
      link.href = "/jobs?queue=" + q;
      link.textContent = name;
      cell.appendChild(link);
      tr.appendChild(cell);
      cell = document.createElement("td");
      cell.className = "num";
      var depth = document.createElement("strong");
      depth.setAttribute("data-queue", name);
      depth.setAttribute("data-state", "queued");
      cell.appendChild(depth);
      tr.appendChild(cell);
      states.forEach(function (state) {
        var td = document.createElement("td");
        td.className = "num";
        var a = document.createElement("a");
        a.href = "/jobs?queue=" + q + "&state=" + encodeURIComponent(state);
        a.setAttribute("data-queue", name);
        a.setAttribute("data-state", state);
        td.appendChild(a);
        tr.appendChild(td);
      });
      body.appendChild(tr);
    });
    table.hidden = names.length === 0;
    each("[data-no-queues]", function (el) { el.hidden = names.length !== 0; });
  }

  function update(d) {
    if (document.querySelector("[data-waiting]")) {
      window.location.reload(); // rendered before the first snapshot: render it now
      return;
    }
    var jobs = d.jobs || {}, totals = d.totals || {}, rates = d.rates || {};
    var workers = d.workers || {}, queues = d.queues || {};
    each("[data-count]", function (el) {
      setText(el, String(jobs[el.getAttribute("data-count")] || 0));
    });
    each("[data-total]", function (el) {
      setText(el, String(totals[el.getAttribute("data-total")] || 0));
    });
    each("[data-rate]", function (el) {
      setText(el, (rates[el.getAttribute("data-rate")] || 0).toFixed(2));
    });
    each("[data-workers]", function (el) {
      setText(el, String(workers[el.getAttribute("data-workers")] || 0));
    });
    each("[data-processed]", function (el) {
      setText(el, String((totals.succeeded || 0) + (totals.dead || 0)));
    });
    queueRows(queues);
    if (typeof d.uptime === "number") each("[data-uptime]", function (el) { setText(el, duration(d.uptime)); });
    each("[data-queue]", function (el) {
      var counts = queues[el.getAttribute("data-queue")] || {};
      setText(el, String(counts[el.getAttribute("data-state")] || 0));
    });
    if (d.store) {
      each("[data-store]", function (el) {
        setText(el, d.store.ok ? "ok" : "unavailable");
        el.classList.toggle("ok", !!d.store.ok);
        el.classList.toggle("bad", !d.store.ok);
      });
      each("[data-store-error]", function (el) { setText(el, d.store.error || ""); });
      each("[data-store-outages]", function (el) { setText(el, String(d.store.outages || 0)); });
    }
    var p = d.point;
    if (p && (history.length === 0 || p[0] > history[history.length - 1][0])) {
      history.push(p);
      if (history.length > HISTORY) history.splice(0, history.length - HISTORY);
      draw();
    }
  }

  function setLive(state) {
    each("[data-live-status]", function (el) {
      el.classList.toggle("on", state === "on");
      el.classList.toggle("off", state === "off");
      setText(el, state === "on" ? "live" : state === "off" ? "reconnecting" : "paused");
    });
  }

  function connect() {
    if (source || !window.EventSource) return;
    source = new EventSource("/events");
    source.onopen = function () { setLive("on"); };
    source.onmessage = function (e) {
      setLive("on");
      try { update(JSON.parse(e.data)); } catch (err) { /* a torn event: the next one mends it */ }
    };
    source.onerror = function () { setLive("off"); }; // EventSource retries by itself
  }

  function disconnect() {
    if (source) { source.close(); source = null; }
    setLive("paused");
  }

  // -- forms -------------------------------------------------------------------------

  document.addEventListener("click", function (e) {
    var target = e.target;
    var button = target && target.closest ? target.closest("[data-confirm]") : null;
    if (button && !window.confirm(button.getAttribute("data-confirm"))) e.preventDefault();
  });

  document.addEventListener("change", function (e) {
    var box = e.target;
    if (box && box.hasAttribute && box.hasAttribute("data-select-all")) {
      var form = box.form || document;
      each("input[type=checkbox][name=ids]", function (el) {
        if (el.form === form || form === document) el.checked = box.checked;
      });
    }
  });

  // -- start -------------------------------------------------------------------------

  document.addEventListener("DOMContentLoaded", function () {
    var canvas = document.getElementById("chart");
    if (canvas) {
      try { history = JSON.parse(canvas.getAttribute("data-history") || "[]"); } catch (err) { history = []; }
      draw();
      window.addEventListener("resize", draw);
    }
    if (document.body.classList.contains("overview")) {
      connect();
      document.addEventListener("visibilitychange", function () {
        if (document.hidden) disconnect(); else connect();
      });
    }
  });
})();
