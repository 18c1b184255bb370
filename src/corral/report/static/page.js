/* corral's run page: the report, and the dashboard's base.
 * Written for corral, no library: it draws the data that corral.report.model.page_data
 * writes (columns; times in ms from the run's start). Every text from the run goes in
 * through textContent, never as HTML. */
(function () {
  'use strict';
  const Corral = (window.Corral = window.Corral || {});
  const COLOURS = {};
  const OUTCOME_LABEL = {
    completed: 'completed', failed: 'failed', timed_out: 'timed out', cancelled: 'cancelled',
    retried: 'failed, retried', requeued: 'given back', running: 'running',
    unknown: 'no driver: end unknown',
  };
  const PENDING = ['NEW', 'WAITING', 'QUEUED'];
  const ENDED = ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT'];
  const STATUS_OUTCOME = {
    COMPLETED: 'completed', FAILED: 'failed', TIMED_OUT: 'timed_out', CANCELLED: 'cancelled',
    RUNNING: 'running', SUBMITTED: 'requeued',
  };
  const AXIS = 22, GUTTER = 56, STRIP = 44;
  // The lanes take at most this height: past it they share pixel rows, and each bar
  // keeps a pixel (review: 20,000 lanes made a canvas 60,000 px tall, the page's end
  // a minute's scrolling away, and too tall for a browser to draw at all on a HiDPI screen).
  const LANES_HEIGHT = 520;
  // Outcomes drawn in this order, the failures last: a bar widened to stay visible
  // must not hide one of them, among thousands of short ones.
  const DRAW_ORDER = ['completed', 'running', 'unknown', 'requeued', 'retried', 'cancelled',
    'timed_out', 'failed'];
  const WAITING_CURVE = '#c26d00';  // how many jobs waited to start, over the cores chart
  let data = null;
  let view = null;           // [from, to] in ms
  let selected = -1;         // job index
  let byLane = [];           // lane -> bar indices sorted by start
  let end = 1;               // where the last moment is drawn (ms of the drawn axis)
  let manyDays = false;      // the run spans more than one calendar day
  let breaks = [];           // long idle stretches drawn narrow: [from, to, shown, no driver, cut before]
  let laneHeight = 16;
  let wired = false;
  const hovered = { failures: false, 'job-list': false };  // lists under the pointer stay still
  const HELD = ' · held still while the pointer is on it';
  let moved = false;         // the user zoomed or panned: updates keep their view
  const listeners = [];

  const $ = (id) => document.getElementById(id);
  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    if (attrs) for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }
  function colour(name) {
    if (!COLOURS[name]) {
      COLOURS[name] = getComputedStyle(document.documentElement).getPropertyValue('--' + name).trim() || '#888';
    }
    return COLOURS[name];
  }
  function chip(status) {
    const pending = PENDING.includes(status);
    const c = el('span', { class: pending ? 'chip pending' : 'chip' }, status.toLowerCase().replace('_', ' '));
    if (!pending) c.style.background = colour(STATUS_OUTCOME[status] || 'pending');
    return c;
  }
  function lastLines(text, n) {
    const lines = text.replace(/\n+$/, '').split('\n');
    return lines.slice(-n).join('\n');
  }
  function seconds(ms) {
    if (ms === null || ms === undefined) return '–';
    const s = ms / 1000;
    if (ms > 0 && ms < 1) return 'under 1 ms';
    if (s < 1) return Math.round(ms) + ' ms';
    if (s < 120) return s.toFixed(s < 10 ? 2 : 1) + ' s';
    if (s < 7200) return (s / 60).toFixed(1) + ' min';
    return (s / 3600).toFixed(2) + ' h';
  }
  function coreSeconds(value) {
    return value < 10 ? value.toFixed(2) : value < 1000 ? value.toFixed(1) : Math.round(value).toLocaleString();
  }
  /** The wall-clock time of *ms*, with its date where the run spans days (review: a
   * job of three days read "8:53:20 AM → 8:53:20 AM", a job of the third day as of the first). */
  function clock(ms) {
    const at = new Date(data.origin * 1000 + ms);
    return manyDays ? at.toLocaleString() : at.toLocaleTimeString();
  }
  Corral.seconds = seconds;
  const quoted = (name) => '"' + name + '"';

  // -- summary, failures, slowest ---------------------------------------------------------
  function card(label, value, sub) {
    const c = el('div', { class: 'card' });
    c.append(el('div', { class: 'label' }, label), el('div', { class: 'value' }, value));
    if (sub) c.append(el('div', { class: 'sub' }, sub));
    return c;
  }
  function drawSummary() {
    const s = data.summary;
    const box = $('summary');
    box.replaceChildren();
    const states = el('div', { class: 'sub' });
    for (const [status, n] of Object.entries(s.by_status)) {
      const c = chip(status);
      c.textContent = n + ' ' + c.textContent;
      c.dataset.status = status;
      states.append(c);
    }
    const jobs = card('jobs', s.jobs);
    jobs.append(states);
    jobs.id = 'card-jobs';
    box.append(jobs);
    const undriven = s.undriven_seconds >= 1 && s.undriven_seconds >= s.wall_seconds / 100
      ? seconds(s.undriven_seconds * 1000) + ' of it with no driver' : '';
    box.append(card('wall time', seconds(s.wall_seconds * 1000),
      [data.live ? 'so far' : '', undriven].filter(Boolean).join(' · ')));
    const util = s.utilisation === null ? '–' : (100 * s.utilisation).toFixed(0) + ' %';
    const utilSub = s.attempts === 0 ? 'no job has run yet' : s.available_core_seconds === null
      ? coreSeconds(s.busy_core_seconds) + ' core-s busy (the backend did not say its cores)'
      : coreSeconds(s.busy_core_seconds) + ' of ' + coreSeconds(s.available_core_seconds) + ' core-s busy';
    box.append(card('utilisation', util, utilSub));
    box.append(card('peak cores', s.peak_cores));
    box.append(card('attempts', s.attempts, s.retries + ' retried or rerun'));
    box.append(card('backend', s.backends.join(', ') || '–',
      s.native_ids + ' ' + (s.native_ids === 1 ? s.native_kind.replace(/s$/, '') : s.native_kind)));
    if (data.orphaned) {  // (cold review: a killed run's page said "7 running" and no more)
      const gone = card('no driver', data.orphaned + ' unfinished',
        data.orphaned === 1
          ? 'job: its driver is gone, and nothing runs it now; the next run of the script runs it again'
          : 'jobs: their driver is gone, and nothing runs them now; the next run of the script runs them again');
      gone.id = 'card-orphaned';
      gone.classList.add('warning');
      box.prepend(gone);
    }
  }
  function jobLink(n) {
    const a = el('a', { class: 'job', tabindex: '0' }, 'job ' + data.jobs.id[n] + ' ' + quoted(data.jobs.name[n]));
    a.addEventListener('click', (e) => { e.stopPropagation(); select(n, true); });
    return a;
  }
  function drawFailures() {
    if (hovered.failures) return;
    const box = $('failures');
    box.replaceChildren();
    $('failures-count').textContent = '(' + data.failures.length + ')';
    if (!data.failures.length) box.append(el('div', { class: 'muted' }, 'no job failed, timed out or was cancelled'));
    const shown = data.failures.slice(0, 500);
    for (const n of shown) {
      const status = data.jobs.status[n];
      const item = el('div', { class: 'failure ' + status, 'data-job': data.jobs.id[n] });
      const head = el('div');
      head.append(chip(status), jobLink(n));
      item.append(head, el('div', { class: 'reason' }, data.jobs.reason[n] || '(no reason recorded)'));
      const trace = data.traceback && data.traceback[n];
      if (trace) item.append(el('pre', { class: 'traceback' }, lastLines(trace, 8)));
      const tail = data.stderr && data.stderr[n];
      if (tail) item.append(el('pre', { class: 'stderr' }, tail));
      item.addEventListener('click', () => select(n, true));
      box.append(item);
    }
    if (data.failures.length > shown.length) {
      box.append(el('div', { class: 'muted' }, (data.failures.length - shown.length) + ' more: corral status --all'));
    }
  }
  function drawSlowest() {
    const table = $('slowest');
    table.replaceChildren();
    const head = el('tr');
    for (const h of ['job', 'status', 'longest attempt', 'resources']) head.append(el('th', null, h));
    table.append(head);
    const longest = longestAttempts();
    for (const n of data.slowest) {
      const row = el('tr', { 'data-job': String(n) });
      const cell = el('td');
      cell.append(jobLink(n));
      const status = el('td');
      status.append(chip(data.jobs.status[n]));
      row.append(cell, status, el('td', null, seconds(longest[n])), el('td', null, data.jobs.res[n]));
      table.append(row);
    }
  }
  /** The running jobs' lengths move on in place: rows rebuilt under a reader's
   * pointer, selection or keyboard focus would lose them. */
  function updateSlowest() {
    const longest = longestAttempts();
    const rows = $('slowest').querySelectorAll('tr[data-job]');
    rows.forEach((row) => { row.children[2].textContent = seconds(longest[Number(row.dataset.job)]); });
  }
  function drawJobList(force) {
    const box = $('job-list');
    const wanted = $('job-filter').value.trim().toLowerCase();
    const j = data.jobs, found = [];
    const rank = (n) => (j.status[n] === 'RUNNING' ? 0 : j.status[n] === 'SUBMITTED' ? 1 : PENDING.includes(j.status[n]) ? 2 : 3);
    for (let n = 0; n < j.id.length; n++) {
      if (!wanted ? ENDED.includes(j.status[n]) : !(j.id[n] === wanted || j.name[n].toLowerCase().includes(wanted)
          || j.status[n].toLowerCase() === wanted.replace(/[ -]/g, '_'))) continue;
      found.push(n);
    }
    found.sort((x, y) => rank(x) - rank(y) || x - y);
    $('jobs-count').textContent = (wanted ? '(' + found.length + ' found)' : '(' + j.id.length + '; unfinished below, find any)')
      + (hovered['job-list'] && force !== true ? HELD : '');
    if (hovered['job-list'] && force !== true) return;
    box.replaceChildren();
    for (const n of found.slice(0, 200)) {
      const row = el('div', { class: 'row' });
      row.append(chip(j.status[n]), jobLink(n));
      box.append(row);
    }
    if (found.length > 200) box.append(el('div', { class: 'muted' }, (found.length - 200) + ' more: narrow the search'));
    if (!found.length) box.append(el('div', { class: 'muted' }, wanted ? 'no job matches' : 'no unfinished job'));
  }
  function longestAttempts() {
    const b = data.bars, out = {};
    for (let i = 0; i < b.job.length; i++) {
      const e = b.e[i] === null ? data.now : b.e[i];
      out[b.job[i]] = Math.max(out[b.job[i]] || 0, e - b.s[i]);
    }
    return out;
  }

  // -- the timeline -----------------------------------------------------------------------
  function index() {
    const b = data.bars;
    byLane = Array.from({ length: data.lanes }, () => []);
    let last = 1;
    for (let i = 0; i < b.job.length; i++) {
      byLane[b.lane[i]].push(i);
      last = Math.max(last, b.e[i] === null ? data.now : b.e[i]);
    }
    for (const lane of byLane) lane.sort((x, y) => b.s[x] - b.s[y]);
    breaks = [];
    let cut = 0;
    for (const [from, to, shown, undriven] of data.breaks || []) {
      breaks.push([from, to, shown, undriven, cut]);
      cut += to - from - shown;
    }
    end = toShown(last);
    manyDays = new Date(data.origin * 1000).toDateString() !== new Date(data.origin * 1000 + last).toDateString();
  }

  // -- the drawn axis: a long stretch in which nothing ran is drawn narrow ----------------
  // (review: a run killed at night and run again in the morning drew both sessions as
  // slivers at the ends of an empty day). Mirrors corral.report.timeline.ShownTime.
  /** Where moment *t* (ms from the run's start) is drawn, in ms of the drawn axis. */
  function toShown(t) {
    let lo = 0, hi = breaks.length - 1, found = -1;
    while (lo <= hi) {
      const mid = (lo + hi) >> 1;
      if (breaks[mid][0] <= t) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    if (found < 0) return t;
    const [from, to, shown, , cut] = breaks[found];
    if (t >= to) return t - cut - (to - from - shown);
    return from - cut + ((t - from) * shown) / (to - from);
  }
  /** The moment drawn at *d* (ms of the drawn axis): toShown's inverse. */
  function toReal(d) {
    for (let k = breaks.length - 1; k >= 0; k--) {
      const [from, to, shown, , cut] = breaks[k];
      const at = from - cut;
      if (d >= at + shown) return d + cut + (to - from - shown);
      if (d >= at) return from + ((d - at) * (to - from)) / shown;
    }
    return d;
  }
  /** The break drawn at *d* (ms of the drawn axis), or -1. */
  function breakAt(d) {
    return breaks.findIndex(([from, , shown, , cut]) => d >= from - cut && d <= from - cut + shown);
  }
  /** The stretches of [*from*, *to*] (drawn ms) drawn to scale, in ms from the start. */
  function toScale(from, to) {
    const out = [];
    let start = toReal(from);
    const stop = toReal(to);
    for (const [bFrom, bTo] of breaks) {
      if (bTo <= start) continue;
      if (bFrom >= stop) break;
      if (bFrom > start) out.push([start, bFrom]);
      start = bTo;
    }
    if (stop > start) out.push([start, stop]);
    return out;
  }
  function legend() {
    const box = $('legend');
    box.replaceChildren();
    const present = new Set(data.bars.o);
    for (const [code, name] of data.outcomes.entries()) {
      if (!present.has(code)) continue;
      const item = el('span', { class: 'legend-item' });
      const sw = el('span', { class: 'swatch' });
      sw.style.background = colour(name);
      item.append(sw, document.createTextNode(OUTCOME_LABEL[name] || name));
      box.append(item);
    }
    if ((data.breaks || []).length) {
      const item = el('span', { class: 'legend-item', id: 'legend-break' });
      const sw = el('span', { class: 'swatch' });
      sw.style.background = 'repeating-linear-gradient(135deg, #f4f5f7 0 3px, #c9ced4 3px 4px)';
      item.append(sw, document.createTextNode('nothing ran: drawn narrow'));
      box.append(item);
    }
    const b = data.bars;
    if (!(data.waiting || []).length && !b.q.some((q, i) => q !== null && q < b.s[i])) return;
    const item = el('span', { class: 'legend-item' });
    const sw = el('span', { class: 'swatch' });
    sw.style.background = colour('queued');
    sw.style.height = '3px';
    item.append(sw, document.createTextNode('waiting to start'));
    box.append(item);
    const count = el('span', { class: 'legend-item' });
    const line = el('span', { class: 'swatch' });
    line.style.background = WAITING_CURVE;
    line.style.height = '2px';
    count.append(line, document.createTextNode('jobs waiting, over time (the cores chart)'));
    box.append(count);
  }
  function geometry() {
    const canvas = $('timeline');
    const width = canvas.parentElement.clientWidth || 800;
    const lanes = Math.max(1, data.lanes);
    laneHeight = lanes * 3 <= LANES_HEIGHT ? Math.min(20, Math.floor(LANES_HEIGHT / lanes)) : LANES_HEIGHT / lanes;
    const height = Math.ceil(AXIS + lanes * laneHeight + STRIP + 6);
    return { width, height, plot: width - GUTTER - 8 };
  }
  function draw() {
    const canvas = $('timeline');
    const g = geometry();
    const ratio = window.devicePixelRatio || 1;
    if (canvas.width !== Math.round(g.width * ratio) || canvas.height !== Math.round(g.height * ratio)) {
      canvas.width = Math.round(g.width * ratio);
      canvas.height = Math.round(g.height * ratio);
      canvas.style.height = g.height + 'px';
    }
    const ctx = canvas.getContext('2d');
    ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
    ctx.clearRect(0, 0, g.width, g.height);
    const [from, to] = view;
    const scale = g.plot / Math.max(1e-9, to - from);
    const X = (t) => GUTTER + (toShown(t) - from) * scale;
    const labels = axis(ctx, g, from, to, X);
    const b = data.bars;
    const top = AXIS;
    // waits first, under the bars
    ctx.strokeStyle = colour('queued');
    ctx.lineWidth = Math.max(1, Math.min(3, laneHeight / 5));
    ctx.beginPath();
    for (let i = 0; i < b.job.length; i++) {
      const q = b.q[i];
      if (q === null || q >= b.s[i]) continue;
      const x0 = X(q), x1 = X(b.s[i]);
      if (x1 < GUTTER || x0 > g.width) continue;
      const y = top + b.lane[i] * laneHeight + laneHeight / 2;
      ctx.moveTo(Math.max(GUTTER, x0), y);
      ctx.lineTo(Math.min(g.width, x1), y);
    }
    ctx.stroke();
    let drawn = 0;
    const gap = laneHeight > 6 ? 1 : 0;
    const byColour = {};
    for (let i = 0; i < b.job.length; i++) {
      const e = b.e[i] === null ? data.now : b.e[i];
      const x0 = X(b.s[i]), x1 = X(e);
      if (x1 < GUTTER || x0 > g.width) continue;
      drawn++;
      const name = data.outcomes[b.o[i]];
      (byColour[name] = byColour[name] || []).push(i);
    }
    const barHeight = Math.max(1, laneHeight - 2 * gap);  // lanes sharing a pixel row: a pixel each
    const names = Object.keys(byColour).sort((x, y) => DRAW_ORDER.indexOf(x) - DRAW_ORDER.indexOf(y));
    for (const name of names) {
      ctx.fillStyle = colour(name);
      const least = name === 'completed' || name === 'running' ? 1 : 3;  // a short failure still shows
      for (const i of byColour[name]) {
        const e = b.e[i] === null ? data.now : b.e[i];
        const x0 = Math.max(GUTTER, X(b.s[i])), x1 = Math.min(g.width, X(e));
        const width = x1 - x0 > 4 ? x1 - x0 - 1 : Math.max(least, x1 - x0);  // a seam between neighbours
        ctx.fillRect(x0, top + b.lane[i] * laneHeight + gap, width, barHeight);
      }
    }
    if (selected >= 0) outlineJob(ctx, X, top);
    strip(ctx, g, X, from, to);
    canvas.dataset.bars = String(drawn);
    canvas.dataset.total = String(b.job.length);
    canvas.dataset.breaks = String(breaks.length);
    canvas.dataset.ticks = labels.join(' | ');   // what the axis says, as text
    if (!Corral.firstDrawMs) Corral.firstDrawMs = performance.now();
  }
  function outlineJob(ctx, X, top) {
    const b = data.bars;
    const parents = new Set(data.jobs.deps[selected]);
    for (let i = 0; i < b.job.length; i++) {
      const job = b.job[i];
      if (job !== selected && !parents.has(job)) continue;
      if (job === selected && b.q[i] !== null && b.q[i] < b.s[i]) {   // its wait, over the others
        const y = top + b.lane[i] * laneHeight + laneHeight / 2;
        ctx.setLineDash([4, 3]);
        ctx.strokeStyle = '#111';
        ctx.lineWidth = 2;
        ctx.beginPath();
        ctx.moveTo(Math.max(GUTTER, X(b.q[i])), y);
        ctx.lineTo(X(b.s[i]), y);
        ctx.stroke();
      }
      const e = b.e[i] === null ? data.now : b.e[i];
      const x0 = X(b.s[i]), x1 = X(e);
      ctx.setLineDash(job === selected ? [] : [3, 2]);
      ctx.strokeStyle = '#111';
      ctx.lineWidth = job === selected ? 2 : 1;
      ctx.strokeRect(x0, top + b.lane[i] * laneHeight + 0.5, Math.max(2, x1 - x0), Math.max(3, laneHeight - 1));
    }
    ctx.setLineDash([]);
  }
  function niceStep(range, pixels) {
    const raw = range / Math.max(1, pixels / 90);
    const steps = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 15000, 30000,
      60000, 120000, 300000, 600000, 900000, 1800000, 3600000, 7200000, 14400000, 43200000, 86400000];
    for (const s of steps) if (s >= raw) return s;
    return steps[steps.length - 1] * Math.ceil(raw / steps[steps.length - 1]);
  }
  /** A tick's label: its offset from the run's start, as precise as the ticks' *step*
   * (review: zoomed in on a long run, every tick read "+35.81 h"). */
  function tickLabel(t, step) {
    if (t === 0) return '0';
    const sign = t < 0 ? '−' : '+', a = Math.round(Math.abs(t) * 1000) / 1000;
    if (a < 1000 && step < 1000) return sign + Math.round(a) + ' ms';
    if (step % 86400000 === 0) return sign + a / 86400000 + ' d';
    const units = step % 3600000 === 0 ? 1 : step % 60000 === 0 ? 2 : 3;   // h, min, s
    const decimals = step >= 1000 ? 0 : step >= 100 ? 1 : step >= 10 ? 2 : 3;
    const parts = [[Math.floor(a / 3600000), ' h'], [Math.floor((a % 3600000) / 60000), ' min'],
      [(a % 60000) / 1000, ' s']].slice(0, units);
    while (parts.length > 1 && parts[parts.length - 1][0] === 0) parts.pop();
    while (parts.length > 1 && parts[0][0] === 0) parts.shift();
    return sign + parts.map(([n, unit]) => (unit === ' s' ? n.toFixed(decimals) : n) + unit).join(' ');
  }
  /** How long a break lasted, and why nothing ran in it. */
  function breakText(k) {
    const [from, to, , undriven] = breaks[k];
    return seconds(to - from) + (undriven >= (to - from) / 2 ? ' with no driver' : ' with nothing running');
  }
  /** The grid, its labels (returned), the breaks, and the lanes' names. */
  function axis(ctx, g, from, to, X) {
    const step = niceStep(to - from, g.plot);
    ctx.fillStyle = '#66707a';
    ctx.strokeStyle = '#e6e9ec';
    ctx.lineWidth = 1;
    ctx.font = '11px system-ui, sans-serif';
    ctx.textBaseline = 'middle';
    const bottom = AXIS + data.lanes * laneHeight;
    const taken = drawBreaks(ctx, g, X, bottom);   // labels' [from, to] x, kept apart
    const fits = (x0, x1) => x1 <= g.width && !taken.some(([a, z]) => x0 < z + 6 && x1 > a - 6);
    const labels = [];
    for (const [a, z] of toScale(from, to)) {
      for (let t = Math.ceil(a / step) * step; t <= z; t += step) {
        const x = Math.round(X(t)) + 0.5;
        ctx.beginPath();
        ctx.moveTo(x, AXIS - 4);
        ctx.lineTo(x, bottom + STRIP);
        ctx.stroke();
        const label = tickLabel(t, step), width = ctx.measureText(label).width;
        if (!fits(x + 3, x + 3 + width)) continue;
        ctx.fillText(label, x + 3, AXIS / 2);
        taken.push([x + 3, x + 3 + width]);
        labels.push(label);
      }
    }
    ctx.textAlign = 'right';
    // a label every 1, 2, 5, 10, ... lanes; past 999, numbers alone fit the gutter
    const every = niceStep(12 / laneHeight, 90);
    for (let lane = 0; lane < data.lanes; lane = lane === 0 && every > 1 ? every - 1 : lane + every) {
      const label = lane === 0 || data.lanes < 1000 ? 'slot ' + (lane + 1) : String(lane + 1);
      ctx.fillText(label, GUTTER - 6, AXIS + lane * laneHeight + laneHeight / 2);
    }
    ctx.fillText('cores', GUTTER - 6, bottom + STRIP / 2 + 2);
    ctx.textAlign = 'left';
    return labels;
  }
  /** Each break in view as a hatched band, its length over it where it fits; returns
   * the labels' extents. */
  function drawBreaks(ctx, g, X, bottom) {
    const taken = [];
    for (let k = 0; k < breaks.length; k++) {
      const [from, to] = breaks[k];
      const x0 = Math.max(GUTTER, X(from)), x1 = Math.min(g.width, X(to));
      if (x1 <= x0) continue;
      ctx.save();
      ctx.beginPath();
      ctx.rect(x0, AXIS - 4, x1 - x0, bottom + STRIP - AXIS + 4);
      ctx.clip();
      ctx.fillStyle = '#f4f5f7';
      ctx.fillRect(x0, AXIS - 4, x1 - x0, bottom + STRIP - AXIS + 4);
      ctx.strokeStyle = '#c9ced4';
      ctx.beginPath();
      for (let x = x0 - (bottom + STRIP); x < x1; x += 6) {   // hatching
        ctx.moveTo(x, bottom + STRIP);
        ctx.lineTo(x + bottom + STRIP, 0);
      }
      ctx.stroke();
      ctx.restore();
      const label = '⋯ ' + seconds(to - from) + ' ⋯', width = ctx.measureText(label).width;
      const centre = (x0 + x1) / 2;
      if (width <= Math.max(x1 - x0, 0) + 40 && centre - width / 2 >= GUTTER && centre + width / 2 <= g.width) {
        ctx.textAlign = 'center';
        ctx.fillText(label, centre, AXIS / 2);
        ctx.textAlign = 'left';
        taken.push([centre - width / 2, centre + width / 2]);
      }
    }
    return taken;
  }
  function strip(ctx, g, X, from, to) {
    // cores held over time, under the lanes
    const b = data.bars;
    const changes = [];
    for (let i = 0; i < b.job.length; i++) {
      const cores = data.jobs.cores[b.job[i]];
      changes.push([b.s[i], cores], [b.e[i] === null ? data.now : b.e[i], -cores]);
    }
    changes.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    const top = AXIS + data.lanes * laneHeight + 4;
    const height = STRIP - 8;
    const peak = Math.max(1, data.summary.peak_cores);
    ctx.fillStyle = 'rgba(31, 111, 229, 0.25)';
    ctx.strokeStyle = colour('running');
    ctx.beginPath();
    ctx.moveTo(GUTTER, top + height);
    let held = 0;
    let lastX = GUTTER;
    for (const [t, delta] of changes) {
      const x = Math.min(g.width, Math.max(GUTTER, X(t)));
      ctx.lineTo(x, top + height - (held / peak) * height);
      held += delta;
      ctx.lineTo(x, top + height - (held / peak) * height);
      lastX = x;
    }
    ctx.lineTo(Math.max(lastX, GUTTER), top + height);
    ctx.closePath();
    ctx.fill();
    ctx.fillStyle = '#66707a';
    ctx.fillText(String(peak), 4, top + 6);
    // jobs waiting to start, as a line over the cores
    const waits = [];
    for (let i = 0; i < b.job.length; i++) {
      if (b.q[i] !== null && b.q[i] < b.s[i]) waits.push([b.q[i], 1], [b.s[i], -1]);
    }
    for (const [, from, to] of data.waits || []) {   // waits that ended unstarted
      if (from !== null && to !== null) waits.push([from, 1], [to, -1]);
    }
    for (const [, since] of data.waiting || []) {   // still waiting: up to now
      if (since !== null && since < data.now) waits.push([since, 1], [data.now, -1]);
    }
    if (!waits.length) return;
    waits.sort((x, y) => x[0] - y[0] || x[1] - y[1]);
    let waiting = 0, most = 0;
    for (const [, d] of waits) { waiting += d; most = Math.max(most, waiting); }
    ctx.strokeStyle = WAITING_CURVE;
    ctx.lineWidth = 1.5;
    ctx.beginPath();
    ctx.moveTo(GUTTER, top + height);
    waiting = 0;
    for (const [t, d] of waits) {
      const x = Math.min(g.width, Math.max(GUTTER, X(t)));
      ctx.lineTo(x, top + height - (waiting / most) * height);
      waiting += d;
      ctx.lineTo(x, top + height - (waiting / most) * height);
    }
    ctx.stroke();
    ctx.fillStyle = WAITING_CURVE;
    ctx.textAlign = 'right';
    ctx.fillText('at most ' + most + ' waiting', g.width - 4, top + 6);
    ctx.textAlign = 'left';
  }
  function barAt(px, py) {
    const [from, to] = view;
    const g = geometry();
    const lane = Math.floor((py - AXIS) / laneHeight);
    if (lane < 0 || lane >= data.lanes || px < GUTTER) return -1;
    const d = from + ((px - GUTTER) / g.plot) * (to - from);
    const t = toReal(d);
    const slack = toReal(d + (3 / g.plot) * (to - from)) - t;
    const b = data.bars, bars = byLane[lane];
    let lo = 0, hi = bars.length - 1, found = -1;
    while (lo <= hi) {           // the last bar starting before t + slack
      const mid = (lo + hi) >> 1;
      if (b.s[bars[mid]] <= t + slack) { found = mid; lo = mid + 1; } else hi = mid - 1;
    }
    let best = -1, nearest = slack;    // the bar under the pointer, else the nearest one
    for (let k = found; k >= 0 && k >= found - 4; k--) {
      const i = bars[k];
      const e = b.e[i] === null ? data.now : b.e[i];
      const distance = t < b.s[i] ? b.s[i] - t : t > e ? t - e : 0;
      if (distance < nearest || (distance === 0 && best < 0)) { best = i; nearest = distance; }
      if (distance === 0) break;
    }
    return best;
  }
  const TIP_CHARS = 300;
  /** *text* cut to *most* characters, its end kept (where a traceback says what went wrong). */
  function brief(text, most) {
    return text.length <= most ? text : '…' + text.slice(text.length - most + 1);
  }
  /** What a job's native id is here: its worker's pid where the run packs on this machine. */
  function nativeLabel() {
    return data.summary.native_kind === 'worker pids' ? 'worker pid' : 'native id';
  }
  /** The break under the pointer at *px*, or -1. */
  function breakUnder(px) {
    const [from, to] = view;
    return px < GUTTER ? -1 : breakAt(from + ((px - GUTTER) / geometry().plot) * (to - from));
  }
  function placeTip(box, px, py) {
    box.hidden = false;
    const wrap = $('timeline-wrap').getBoundingClientRect();
    const w = box.offsetWidth, h = box.offsetHeight;
    box.style.left = Math.max(0, Math.min(px + 14, wrap.width - w - 4)) + 'px';
    box.style.top = Math.max(0, py + 14 + h > wrap.height ? py - h - 10 : py + 14) + 'px';
  }
  function breakTip(k, px, py) {
    const box = $('tip');
    box.replaceChildren(el('div', null, breakText(k)),
      el('div', null, 'drawn narrow: ' + clock(breaks[k][0]) + ' → ' + clock(breaks[k][1])));
    placeTip(box, px, py);
  }
  function tip(i, px, py) {
    const box = $('tip');
    if (i < 0) {
      const k = px === undefined ? -1 : breakUnder(px);
      if (k >= 0) breakTip(k, px, py); else box.hidden = true;
      return;
    }
    const b = data.bars, n = b.job[i];
    box.replaceChildren();
    const e = b.e[i] === null ? data.now : b.e[i];
    box.append(el('div', null, 'job ' + data.jobs.id[n] + ' ' + quoted(brief(data.jobs.name[n], 120)) + ' · attempt ' + b.n[i]));
    box.append(el('div', null, OUTCOME_LABEL[data.outcomes[b.o[i]]] + ' after ' + seconds(e - b.s[i])
      + (b.q[i] !== null && b.q[i] < b.s[i] ? ' · waited ' + seconds(b.s[i] - b.q[i]) : '')));
    // A few lines each, whatever their length: the job's panel has them whole (cold
    // review: a 3,000-character reason made a tooltip that hid the whole timeline).
    box.append(el('div', null, brief(data.jobs.command[n], TIP_CHARS)));
    box.append(el('div', null, data.jobs.res[n] + (data.jobs.native[n] ? ' · ' + nativeLabel() + ' ' + data.jobs.native[n] : '')));
    if (b.why[i]) box.append(el('div', null, brief(b.why[i], TIP_CHARS)));
    const trace = data.traceback && data.traceback[n];
    if (trace) box.append(el('div', { class: 'tail' }, brief(lastLines(trace, 4), TIP_CHARS)));
    const tail = data.stderr && data.stderr[n];
    if (tail) box.append(el('div', { class: 'tail' }, brief(lastLines(tail, 6), TIP_CHARS)));
    placeTip(box, px, py);
  }
  function wire() {
    const canvas = $('timeline');
    let drag = null;
    canvas.addEventListener('wheel', (ev) => {
      ev.preventDefault();
      const g = geometry();
      const rect = canvas.getBoundingClientRect();
      const [from, to] = view;
      const at = from + ((ev.clientX - rect.left - GUTTER) / g.plot) * (to - from);
      const factor = Math.exp(ev.deltaY * 0.0015);
      const span = Math.max(1, Math.min(end * 4 + 1000, (to - from) * factor));
      const left = (at - from) / (to - from);
      view = [at - left * span, at + (1 - left) * span];
      moved = true;
      schedule();
    }, { passive: false });
    canvas.addEventListener('mousedown', (ev) => {
      drag = { x: ev.clientX, view: view.slice(), moved: false };
      canvas.classList.add('dragging');
    });
    window.addEventListener('mouseup', (ev) => {
      if (!drag) return;
      canvas.classList.remove('dragging');
      const moved = drag.moved;
      drag = null;
      if (moved) return;
      const rect = canvas.getBoundingClientRect();
      const i = barAt(ev.clientX - rect.left, ev.clientY - rect.top);
      if (i >= 0) select(data.bars.job[i], false);
    });
    canvas.addEventListener('mousemove', (ev) => {
      const rect = canvas.getBoundingClientRect();
      const px = ev.clientX - rect.left, py = ev.clientY - rect.top;
      if (drag) {
        const dx = ev.clientX - drag.x;
        if (Math.abs(dx) > 2) drag.moved = true;
        const g = geometry();
        const shift = (dx / g.plot) * (drag.view[1] - drag.view[0]);
        view = [drag.view[0] - shift, drag.view[1] - shift];
        moved = true;
        schedule();
        tip(-1);
        return;
      }
      tip(barAt(px, py), px, py);
    });
    canvas.addEventListener('mouseleave', () => tip(-1));
    canvas.addEventListener('dblclick', () => { moved = false; resetView(); });
    $('btn-reset').addEventListener('click', () => { moved = false; resetView(); });
    $('job-filter').addEventListener('input', () => drawJobList(true));
    // A live page redraws its lists as jobs change: not while the pointer is on one,
    // where a row moving under a click would select another job.
    for (const [id, draw] of [['failures', drawFailures], ['job-list', drawJobList]]) {
      $(id).addEventListener('mouseenter', () => { hovered[id] = true; });
      $(id).addEventListener('mouseleave', () => { hovered[id] = false; draw(); });
    }
    window.addEventListener('resize', schedule);
  }
  function resetView() {
    const pad = Math.max(1, end * 0.02);
    view = [-pad, end + pad];
    schedule();
  }
  let pending = false;
  function schedule() {
    if (pending) return;
    pending = true;
    requestAnimationFrame(() => { pending = false; draw(); });
  }

  // -- the selected job -------------------------------------------------------------------
  function select(n, scroll) {
    selected = n;
    drawDetails();
    schedule();
    for (const listener of listeners) listener(n);
    if (scroll) $('details-section').scrollIntoView({ block: 'nearest' });
  }
  function attemptTimes(n) {
    const b = data.bars, times = [];
    for (let i = 0; i < b.job.length; i++) {
      if (b.job[i] !== n) continue;
      const e = b.e[i];
      times.push('#' + b.n[i] + ' ' + OUTCOME_LABEL[data.outcomes[b.o[i]]] + ': ' + clock(b.s[i]) + ' → '
        + (e === null ? 'now' : clock(e)) + ' (' + seconds((e === null ? data.now : e) - b.s[i]) + ')');
    }
    return times.join('\n') || 'never started';
  }
  function drawDetails() {
    const box = $('details');
    box.replaceChildren();
    if (selected < 0 || selected >= data.jobs.id.length) {
      $('details-title').textContent = '(click a bar or a job)';
      return;
    }
    const n = selected, j = data.jobs;
    $('details-title').textContent = j.id[n] + ' ' + quoted(j.name[n]);
    const table = el('table', { id: 'job-table' });
    const row = (label, value) => {
      const r = el('tr');
      const cell = el('td');
      if (value instanceof Node) cell.append(value); else cell.textContent = value === null || value === undefined ? '–' : String(value);
      r.append(el('td', null, label), cell);
      table.append(r);
    };
    const state = el('span');
    state.append(chip(j.status[n]));
    if (!data.live && (j.status[n] === 'RUNNING' || j.status[n] === 'SUBMITTED')) {
      state.append(document.createTextNode(' as last seen: no driver runs the run now'));
    }
    row('status', state);
    row('reason', j.reason[n]);
    row('command', j.command[n]);
    row('resources', j.res[n]);
    row('attempts', j.attempts[n]);
    row('exit code', j.exit[n]);
    row(nativeLabel(), j.native[n]);
    const times = el('span', { id: 'attempt-times' }, attemptTimes(n));
    row('attempt times', times);
    const parents = el('span');
    for (const p of j.deps[n]) { parents.append(jobLink(p), document.createTextNode(' ')); }
    row('after (parents)', j.deps[n].length ? parents : 'none');
    const children = el('span');
    let count = 0;
    for (let c = 0; c < j.deps.length && count < 50; c++) {
      if (j.deps[c].includes(n)) { children.append(jobLink(c), document.createTextNode(' ')); count++; }
    }
    row('before (children)', count ? children : 'none');
    box.append(table);
    const trace = data.traceback && data.traceback[n];
    if (trace) box.append(el('div', { class: 'muted' }, 'traceback'), el('pre', { class: 'traceback' }, trace));
    const tail = data.stderr && data.stderr[n];
    if (tail) {
      box.append(el('div', { class: 'muted' }, 'stderr (tail)'), el('pre', { class: 'stderr' }, tail));
    }
  }

  // -- entry points -----------------------------------------------------------------------
  Corral.onSelect = (listener) => listeners.push(listener);
  Corral.selected = () => selected;
  Corral.data = () => data;
  Corral.show = function (next) {
    data = next;
    $('run-title').textContent = data.title;
    // A file says when it was taken, a run still going too; the dashboard is now.
    $('run-path').textContent = data.path + (Corral.dashboard ? '' : ' · as of ' + new Date(data.generated * 1000).toLocaleString());
    document.title = 'corral · ' + data.title;
    index();
    if (!wired) { wire(); wired = true; }
    if (!view || !moved) resetView();   // a live run grows: show all of it unless zoomed
    if (selected >= data.jobs.id.length) selected = -1;
    drawSummary();
    drawFailures();
    drawJobList();
    drawSlowest();
    legend();
    drawDetails();
    schedule();
  };
  /** A live page moves the clock between readings: running bars grow. */
  Corral.tick = function (nowMs) {
    if (!data) return;
    const delta = (nowMs - data.now) / 1000;
    const s = data.summary;
    if (delta > 0) {       // the clock moves on for what runs: the numbers too
      let held = 0;
      for (let i = 0; i < data.bars.job.length; i++) if (data.bars.e[i] === null) held += data.jobs.cores[data.bars.job[i]];
      // (Cold review: the run's average rate, lowered by the time no driver ran it
      // after a kill, let utilisation climb past 100 % between two readings.)
      const rate = s.available_core_seconds === null ? null
        : s.cores_now || (s.wall_seconds ? s.available_core_seconds / s.wall_seconds : null);
      if (held || (data.waiting || []).length) {
        s.wall_seconds += delta;
        s.busy_core_seconds += held * delta;
        if (rate !== null) s.available_core_seconds += rate * delta;
        s.utilisation = s.available_core_seconds ? s.busy_core_seconds / s.available_core_seconds : null;
      }
    }
    data.now = nowMs;
    index();
    drawSummary();
    updateSlowest();
    const times = $('attempt-times');
    if (times && selected >= 0 && data.bars.job.some((job, i) => job === selected && data.bars.e[i] === null)) {
      times.textContent = attemptTimes(selected);   // its running attempt's length, in place
    }
    if (!moved) resetView(); else schedule();
  };
  /** Where bar *i* is drawn, in the canvas's CSS pixels (null when out of view). */
  Corral.barCentre = function (i) {
    const g = geometry();
    const b = data.bars, [from, to] = view;
    const e = b.e[i] === null ? data.now : b.e[i];
    const X = (t) => GUTTER + ((toShown(t) - from) / (to - from)) * g.plot;
    const x0 = Math.max(GUTTER, X(b.s[i])), x1 = Math.min(g.width, X(e));
    if (x1 < GUTTER || x0 > g.width) return null;
    return { x: (x0 + x1) / 2, y: AXIS + b.lane[i] * laneHeight + laneHeight / 2 };
  };
  /** Where break *k* (data.breaks) is drawn, in the canvas's CSS pixels (null when out of view). */
  Corral.breakCentre = function (k) {
    const g = geometry(), [from, to] = view, [bFrom, bTo] = breaks[k];
    const X = (t) => GUTTER + ((toShown(t) - from) / (to - from)) * g.plot;
    const x0 = Math.max(GUTTER, X(bFrom)), x1 = Math.min(g.width, X(bTo));
    return x1 <= x0 ? null : { x: (x0 + x1) / 2, y: AXIS + (data.lanes * laneHeight) / 2 };
  };
  /** An empty page for the run at *path* (switched to, not read yet, or unreadable). */
  Corral.clear = function (path) {
    const empty = {
      path, title: path.split('/').filter(Boolean).pop() || path, generated: Date.now() / 1000,
      live: false, origin: Date.now() / 1000, now: 0, lanes: 0, outcomes: [],
      summary: { jobs: 0, by_status: {}, wall_seconds: 0, busy_core_seconds: 0, available_core_seconds: null,
        utilisation: null, peak_cores: 0, retries: 0, attempts: 0, backends: [], native_ids: 0, native_kind: 'native ids' },
      jobs: { id: [], name: [], status: [], reason: [], exit: [], command: [], res: [], cores: [], native: [], attempts: [], deps: [], ended: [] },
      bars: { job: [], n: [], lane: [], q: [], s: [], e: [], o: [], why: [] },
      breaks: [], failures: [], slowest: [], traceback: {}, stderr: {},
    };
    Corral.show(empty);
  };
  Corral.reset = function () { data = null; view = null; selected = -1; moved = false; };
  Corral.select = select;

  const embedded = document.getElementById('corral-data');
  if (embedded && embedded.textContent.trim() && embedded.textContent.trim() !== 'null') {
    Corral.show(JSON.parse(embedded.textContent));
  }
})();
