/* corral dashboard: the report's page, kept up to date from the dashboard's API.
 * Polls the run's state twice a second (ETag: unchanged answers are empty), follows the
 * selected job's output, and sends the buttons' requests with the token in a header. */
(function () {
  'use strict';
  const Corral = window.Corral;
  const config = Corral.dashboard;
  const $ = (id) => document.getElementById(id);
  const POLL_MS = 500;
  let run = config.run;
  let etag = null;
  let received = 0;           // Date.now() when the data was read
  let control = null;
  let whyShown = false;       // the note says why the controls are off
  let stream = 'stdout';
  let follow = { job: null, offset: null, done: false };
  let generation = 0;         // bumped on a run switch: late answers are dropped

  async function api(path, options) {
    const headers = Object.assign({ 'X-Corral-Token': config.token }, (options && options.headers) || {});
    return fetch(path, Object.assign({}, options || {}, { headers, cache: 'no-store' }));
  }
  function query(params) {
    return Object.entries(params).map(([k, v]) => encodeURIComponent(k) + '=' + encodeURIComponent(v)).join('&');
  }
  function note(text, bad) {
    const box = $('control-note');
    box.textContent = text || '';
    box.style.color = bad ? '#b3261e' : '';
  }

  // The server's words for a refusal: its JSON's "error", else the text itself.
  async function errorOf(answer) {
    const text = await answer.text();
    try {
      const said = JSON.parse(text).error;
      if (typeof said === 'string') return said.slice(0, 300);
    } catch (notJson) { /* a proxy's page, say: shown as it came */ }
    return text.slice(0, 300);
  }

  // -- the run's state ---------------------------------------------------------------------
  async function poll() {
    const mine = generation;
    try {
      const headers = etag ? { 'If-None-Match': etag } : {};
      const answer = await api('/api/state?' + query({ run }), { headers });
      if (mine !== generation) return;
      if (answer.status === 200) {
        const data = await answer.json();
        if (mine !== generation) return;
        etag = answer.headers.get('ETag');
        received = Date.now();
        Corral.show(data);
        showControl(data.control);
        $('updated').textContent = '';
      } else if (answer.status !== 304) {
        $('updated').textContent = 'cannot read the run: ' + await errorOf(answer);
      } else if (Corral.data() && Corral.data().live) {
        Corral.tick(Corral.data().now + (Date.now() - received));
        received = Date.now();
      }
    } catch (error) {
      $('updated').textContent = 'the dashboard server does not answer: is corral dashboard still running?';
    }
  }
  async function loop() {
    await poll();
    await followOutput();
    setTimeout(loop, POLL_MS);
  }
  function showControl(next) {
    control = next;
    const off = !control.driven;
    $('driver-state').textContent = control.driven
      ? 'driven by ' + (control.kind || 'a process') + ' pid ' + control.pid + (control.paused ? ' · paused' : '')
      : 'no driver';
    for (const id of ['btn-pause', 'btn-resume', 'btn-abort', 'btn-cancel-job', 'btn-abort-job']) {
      $(id).disabled = off;
      $(id).title = off ? control.why : '';
    }
    if (!off) {
      $('btn-pause').disabled = control.paused;
      $('btn-resume').disabled = !control.paused;
    }
    if (off) { note(control.why); whyShown = true; } else if (whyShown) { note(''); whyShown = false; }
    jobButtons();
  }
  async function send(verb, id) {
    const body = { run, verb };
    if (id !== undefined) body.id = id;
    note(verb + '…');
    try {
      const answer = await api('/api/control', {
        method: 'POST', body: JSON.stringify(body), headers: { 'Content-Type': 'application/json' },
      });
      const reply = await answer.json().catch(() => ({ error: 'HTTP ' + answer.status }));
      if (answer.ok) note(verb + ': done'); else note(verb + ': ' + (reply.error || answer.status), true);
    } catch (error) {
      note(verb + ': ' + error, true);
    }
    etag = null;
    poll();
  }

  // -- runs --------------------------------------------------------------------------------
  async function listRuns() {
    try {
      const answer = await api('/api/runs');
      if (!answer.ok) return;
      const runs = await answer.json();
      const select = $('run-select');
      const keep = select.value || run;
      select.replaceChildren();
      for (const r of runs) {
        const option = document.createElement('option');
        option.value = r.path;
        option.textContent = r.name + (r.first ? '' : '  (' + r.path + ')');
        select.append(option);
      }
      select.value = keep;
    } catch (error) { /* the state poll says when the server is gone */ }
  }
  function switchRun(path) {
    run = path;
    generation++;
    etag = null;
    follow = { job: null, offset: null, done: false };
    $('output-text').textContent = '';
    Corral.reset();
    Corral.clear(run);
    poll();
  }

  // -- the selected job: its buttons and its output -----------------------------------------
  function selectedJob() {
    const data = Corral.data(), n = Corral.selected();
    return data && n >= 0 ? { id: data.jobs.id[n], status: data.jobs.status[n] } : null;
  }
  function jobButtons() {
    const job = selectedJob();
    $('job-controls').hidden = !job;
    $('output').hidden = !job;
    if (!job || !control || !control.driven) return;
    const over = ['COMPLETED', 'FAILED', 'CANCELLED', 'TIMED_OUT'].includes(job.status);
    $('btn-cancel-job').disabled = over;
    $('btn-cancel-job').title = over ? 'the job has ended' : '';
    $('btn-abort-job').disabled = job.status !== 'RUNNING';
    $('btn-abort-job').title = job.status !== 'RUNNING' ? 'only a running job can be aborted' : '';
  }
  const FIRST_TAIL = 262144;   // a job's output is shown from its last 256 KB on
  const KEPT_CHARS = 1000000;   // and the panel keeps at most this much of it
  let following = false;        // one reader at a time: two would append the same bytes
  async function followOutput() {
    const job = selectedJob();
    if (!job || following) return;
    if (follow.job !== job.id || follow.stream !== stream) {
      follow = { job: job.id, stream, offset: null, done: false, cut: false };
      $('output-text').textContent = '';
      $('output-note').textContent = '';
    }
    if (follow.done) return;
    following = true;
    const mine = generation, wanted = follow;
    try {
      for (let round = 0; round < 8; round++) {     // then the state poll gets its turn
        const where = wanted.offset === null ? { tail: FIRST_TAIL } : { offset: wanted.offset };
        const answer = await api('/api/output?' + query(Object.assign({ run, job: job.id, stream }, where)));
        if (mine !== generation || wanted !== follow) return;
        const reply = await answer.json();
        if (!answer.ok) { $('output-note').textContent = reply.error || ''; return; }
        const pre = $('output-text');
        if (reply.reset) pre.textContent = '';
        if (reply.skipped) wanted.cut = true;
        if (reply.text) {
          const atBottom = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
          let text = pre.textContent + reply.text;
          if (text.length > KEPT_CHARS) { text = text.slice(-KEPT_CHARS); wanted.cut = true; }
          pre.textContent = text;
          if (atBottom) pre.scrollTop = pre.scrollHeight;
        }
        const progressed = wanted.offset === null || reply.offset > wanted.offset || reply.reset;
        wanted.offset = reply.offset;
        wanted.done = reply.done && !reply.more;
        if (wanted.done && !pre.textContent) pre.textContent = '(no output on ' + stream + ')';
        const data = Corral.data();
        const state = reply.done ? (reply.more ? 'reading…' : 'the job has ended')
          : ['NEW', 'WAITING', 'QUEUED'].includes(reply.status) ? 'the job has not started'
          : data && !data.live ? 'no driver runs the run: the job is not running'
          : 'following as it is written';
        $('output-note').textContent = state + (wanted.cut
          ? ' · earlier output not shown: corral logs ' + job.id + (stream === 'stderr' ? ' --stderr' : '') + ' has all of it' : '');
        if (!reply.more || !progressed) break;
      }
    } catch (error) { /* the next poll tries again */ } finally {
      following = false;
    }
  }
  function setStream(next) {
    stream = next;
    $('tab-stdout').classList.toggle('on', next === 'stdout');
    $('tab-stderr').classList.toggle('on', next === 'stderr');
    followOutput();
  }

  // -- wiring -------------------------------------------------------------------------------
  $('live-bar').hidden = false;
  $('btn-pause').addEventListener('click', () => send('pause'));
  $('btn-resume').addEventListener('click', () => send('resume'));
  $('btn-abort').addEventListener('click', () => {
    if (confirm('Abort every running job? They end CANCELLED; the queue goes on.')) send('abort');
  });
  $('btn-cancel-job').addEventListener('click', () => { const j = selectedJob(); if (j) send('cancel', j.id); });
  $('btn-abort-job').addEventListener('click', () => { const j = selectedJob(); if (j) send('abort', j.id); });
  $('tab-stdout').addEventListener('click', () => setStream('stdout'));
  $('tab-stderr').addEventListener('click', () => setStream('stderr'));
  $('run-select').addEventListener('change', (ev) => switchRun(ev.target.value));
  Corral.onSelect(() => { jobButtons(); followOutput(); });
  listRuns();
  setInterval(listRuns, 5000);
  loop();
})();
