// The alarm board: everything the page does with the bridge goes through the
// public SDK API, so this file doubles as an example of using it.
import { connect } from './notifybridge.js';

const $ = (sel) => document.querySelector(sel);
const params = new URLSearchParams(location.search);

// Who is on duty for what. The groups are the demo's stand-in for the
// recipients a real deployment would put in the JWT.
const defaultGroups = { alice: ['ops', 'noc-north'], bob: ['noc-south'], carol: [] };
const pauseSeconds = clampInt(params.get('pause'), 1, 600, 10);

const kinds = {
  'alarm.fiber_break': { label: 'Fibre break', cls: 'critical' },
  'alarm.attenuation': { label: 'Attenuation', cls: 'major' },
  'test.done': { label: 'OTDR test finished', cls: 'info' },
};

let conn;
let pauseTimer;
let seen = new Set();
// True from a reconnect or a manual resume until caught_up: the events that
// arrive meanwhile are the ones the page missed, and are tagged so.
let resuming = false;
const counts = { received: 0, resumed: 0, dupes: 0, reconnects: 0 };

function clampInt(v, lo, hi, dflt) {
  const n = Number.parseInt(v ?? '', 10);
  return Number.isFinite(n) ? Math.min(hi, Math.max(lo, n)) : dflt;
}

function identity() {
  const user = $('#user').value;
  const groups = [...document.querySelectorAll('input[name=group]:checked')].map((i) => i.value);
  return { user, groups };
}

function setIdentity(user, groups) {
  if (![...$('#user').options].some((o) => o.value === user)) {
    $('#user').add(new Option(user, user));
  }
  $('#user').value = user;
  for (const box of document.querySelectorAll('input[name=group]')) box.checked = groups.includes(box.value);
}

function showState(state, text = state) {
  const pill = $('#state');
  pill.dataset.state = state;
  // Which transport is delivering (websocket, else sse, else poll behind a
  // proxy that blocks the others): the SDK's state says it.
  const transport = state === 'live' ? conn?.transport : undefined;
  if (transport) pill.dataset.transport = transport;
  else delete pill.dataset.transport;
  pill.textContent = transport ? `${text} · ${transport}` : text;
}

function updateCounts() {
  for (const [k, v] of Object.entries(counts)) $(`#count-${k}`).textContent = String(v);
  $('#last-id').textContent = conn?.lastEventId ?? '–';
}

function start(lastEventId) {
  const { user, groups } = identity();
  $('#identity').textContent = `for user:${user}${groups.map((g) => ` group:${g}`).join('')}`;
  conn = connect({ url: '/ws', user, groups, lastEventId });
  conn.on('state', (state, detail) => {
    if (state === 'closed' && detail.code === 4001) {
      // Revoked: the SDK stops. With JWT an app would hand it a token issued
      // after the revocation (onTokenExpired); this auth=none demo has none,
      // and the bridge refuses this user from now on (an identity without a
      // token cannot prove it is newer than the revocation).
      showState('revoked', `logged out everywhere · ${detail.reason || 'revoked'}`);
      $('#logout').hidden = true;
      $('#pause').disabled = true;
      $('#pause-note').textContent = `user:${identity().user} is revoked on this bridge: new connections of this user are refused.`;
      updateCounts();
      return;
    }
    if (state === 'reconnecting') {
      counts.reconnects++;
      resuming = true;
      showState(state, `reconnecting in ${Math.ceil((detail.delay ?? 0) / 1000)} s`);
    } else {
      showState(state);
    }
    updateCounts();
  });
  conn.on('caught_up', () => {
    resuming = false;
    updateCounts();
  });
  conn.on('gap', ({ requested, oldest }) => {
    const banner = $('#gap');
    banner.hidden = false;
    banner.textContent = `Some alarms after ${requested} are no longer kept by the bridge (oldest available: ${oldest}); they may be missing here.`;
  });
  conn.on('event', render);
}

// Identity changes start over from the beginning of the stream, so the board
// shows what this person would have seen.
function restart() {
  conn?.close();
  clearInterval(pauseTimer);
  $('#pause').disabled = false;
  seen = new Set();
  resuming = false;
  Object.keys(counts).forEach((k) => (counts[k] = 0));
  $('#events').replaceChildren();
  $('#empty').hidden = false;
  $('#gap').hidden = true;
  const { user, groups } = identity();
  const url = new URL(location.href);
  url.searchParams.set('user', user);
  url.searchParams.set('groups', groups.join(','));
  history.replaceState(null, '', url);
  $('#pub-to').value = `user:${user}`;
  start('0-0');
  updateCounts();
}

function render(ev) {
  // The SDK already drops repeats; counting here makes that visible.
  if (seen.has(ev.id)) {
    counts.dupes++;
    updateCounts();
    return;
  }
  seen.add(ev.id);
  counts.received++;
  if (resuming) counts.resumed++;

  const kind = kinds[ev.type] ?? { label: ev.type, cls: 'info' };
  const d = ev.data && typeof ev.data === 'object' ? ev.data : { message: JSON.stringify(ev.data) };
  const li = document.createElement('li');
  li.className = `event ${kind.cls}`;
  li.dataset.id = ev.id;
  li.dataset.type = ev.type;

  const body = document.createElement('div');
  const title = document.createElement('div');
  title.className = 'title';
  title.textContent = d.fiber ? `${kind.label} · ${d.fiber}` : kind.label;
  const detail = document.createElement('div');
  detail.className = 'detail';
  detail.textContent = describe(ev.type, d);
  body.append(title, detail);

  const meta = document.createElement('div');
  meta.className = 'meta';
  const time = document.createElement('time');
  const ms = Number(ev.id.split('-')[0]);
  time.dateTime = new Date(ms).toISOString();
  time.textContent = new Date(ms).toLocaleTimeString();
  time.title = ev.id;
  meta.append(time);
  if (resuming) {
    const tag = document.createElement('span');
    tag.className = 'tag resumed';
    tag.textContent = 'on resume';
    meta.append(tag);
  }
  li.append(body, meta); // The colour bar is the ::before, the grid's first column.
  $('#events').prepend(li);
  $('#empty').hidden = true;
  updateCounts();
}

function describe(type, d) {
  const km = typeof d.km === 'number' ? `${d.km.toFixed(1)} km` : undefined;
  switch (type) {
    case 'alarm.fiber_break':
      return [km && `break at ${km}`, d.route].filter(Boolean).join(' · ') || 'fibre break';
    case 'alarm.attenuation':
      return [km && `at ${km}`, d.loss_db !== undefined && `${d.loss_db} dB loss`, d.threshold_db !== undefined && `threshold ${d.threshold_db} dB`]
        .filter(Boolean)
        .join(' · ');
    case 'test.done':
      return [d.test_id, d.result && `result ${d.result}`, d.length_km !== undefined && `length ${d.length_km} km`].filter(Boolean).join(' · ');
    default:
      return d.message ?? JSON.stringify(d);
  }
}

async function logout() {
  const { user } = identity();
  const out = $('#pause-note');
  try {
    const res = await fetch('/demo/disconnect', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ user, reason: 'logged out from the demo' }),
    });
    const text = await res.text();
    if (!res.ok) out.textContent = `refused: ${text.trim()}`;
  } catch (err) {
    out.textContent = `failed: ${err.message}`;
  }
}

// Presence: how many connections each group has on all nodes, refreshed
// every 2 s (the counts are at most 5 s old).
async function refreshPresence() {
  if (!features.presence || document.visibilityState === 'hidden') return;
  for (const badge of document.querySelectorAll('.presence')) {
    try {
      const res = await fetch(`/demo/presence?group=${encodeURIComponent(badge.dataset.group)}`, { cache: 'no-store' });
      if (!res.ok) continue;
      const { connections } = await res.json();
      badge.hidden = false;
      badge.dataset.count = String(connections);
      badge.dataset.online = String(connections > 0);
      badge.textContent = `${connections} online`;
    } catch {
      // The next round tries again.
    }
  }
}

let features = { disconnect: false, presence: false };
async function loadFeatures() {
  try {
    const res = await fetch('/demo/features', { cache: 'no-store' });
    if (res.ok) features = await res.json();
  } catch {
    // An older bridge: neither.
  }
  $('#logout').hidden = !features.disconnect;
  if (features.presence) {
    refreshPresence();
    setInterval(refreshPresence, 2000);
  }
}

function pause() {
  const btn = $('#pause');
  btn.disabled = true;
  const resumeFrom = conn.lastEventId;
  conn.close();
  let left = pauseSeconds;
  const tick = () => {
    showState('paused', `disconnected · resuming in ${left} s`);
    $('#pause-note').textContent = `Disconnected${resumeFrom ? ` after ${resumeFrom}` : ''}. Publish now: nothing will be lost.`;
  };
  tick();
  pauseTimer = setInterval(() => {
    left--;
    if (left > 0) return tick();
    clearInterval(pauseTimer);
    btn.disabled = false;
    $('#pause-note').textContent = `Resumed from ${resumeFrom ?? 'the start'}: tagged alarms arrived on resume.`;
    resuming = true;
    start(resumeFrom ?? '0-0');
  }, 1000);
}

function sample(type, fiber, km) {
  const n = (lo, hi) => Math.round((lo + Math.random() * (hi - lo)) * 10) / 10;
  switch (type) {
    case 'alarm.fiber_break':
      return { fiber, km, severity: 'critical', route: 'Lyon – Grenoble' };
    case 'alarm.attenuation':
      return { fiber, km, loss_db: n(3.5, 9), threshold_db: 3, severity: 'major' };
    default:
      return { fiber, test_id: `T-${Math.floor(Math.random() * 9000 + 1000)}`, result: 'pass', length_km: km };
  }
}

async function publish(to) {
  const type = $('#pub-type').value;
  const fiber = $('#pub-fiber').value.trim() || 'F-12';
  const km = Number.parseFloat($('#pub-km').value) || 0;
  const out = $('#pub-result');
  try {
    const res = await fetch('/demo/publish', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ to, type, data: sample(type, fiber, km) }),
    });
    const text = await res.text();
    out.textContent = res.ok ? `published ${JSON.parse(text).id} → ${to}` : `refused: ${text.trim()}`;
  } catch (err) {
    out.textContent = `failed: ${err.message}`;
  }
}

const initialUser = params.get('user') || 'alice';
setIdentity(initialUser, params.has('groups') ? params.get('groups').split(',').filter(Boolean) : defaultGroups[initialUser] ?? []);
$('#pause-seconds').textContent = String(pauseSeconds);
$('#user').addEventListener('change', () => {
  setIdentity($('#user').value, defaultGroups[$('#user').value] ?? []);
  restart();
});
for (const box of document.querySelectorAll('input[name=group]')) box.addEventListener('change', restart);
$('#pause').addEventListener('click', pause);
$('#logout').addEventListener('click', logout);
$('#publish-form').addEventListener('submit', (e) => {
  e.preventDefault();
  publish($('#pub-to').value.trim());
});
for (const chip of document.querySelectorAll('.chip')) {
  chip.addEventListener('click', () => {
    $('#pub-to').value = chip.dataset.to;
    publish(chip.dataset.to);
  });
}
restart();
loadFeatures();
