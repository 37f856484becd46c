/**
 * The approvals inbox: one page served by `keel serve` at `/inbox`, for the people who decide. It lists
 * the pending requests across sessions (tool, tier, the redacted input, why it needs a person, who asked,
 * when it expires, and the untrusted reads that came before it), refreshes itself every two seconds, and
 * approves or rejects with a reason through the same API as any client, as the person whose token it
 * holds. The token stays in the tab's sessionStorage. The script is served separately (`/inbox.js`) so
 * the page runs under a strict Content-Security-Policy; every value is inserted as text, never as HTML.
 */

/** The page. */
export const INBOX_HTML = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>Keel · approvals</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 2rem; color: #1b1f24; }
  h1 { font-size: 1.3rem; }
  table { border-collapse: collapse; width: 100%; }
  th, td { text-align: left; vertical-align: top; padding: .5rem; border-bottom: 1px solid #d0d7de; }
  pre { margin: 0; white-space: pre-wrap; max-width: 32rem; font-size: 12px; }
  .tier { font-weight: 600; text-transform: uppercase; font-size: 11px; }
  .tier-irreversible, .tier-privileged { color: #b42318; }
  .untrusted { color: #9a6700; }
  #state { color: #57606a; margin: .5rem 0 1rem; }
  #message[data-kind=error] { color: #b42318; }
  #message[data-kind=ok] { color: #1a7f37; }
  input[name=reason] { width: 12rem; }
</style>
</head>
<body>
<h1>Approvals waiting for a person</h1>
<form id="login">
  <label>Bearer token <input id="token" type="password" autocomplete="off" required></label>
  <button type="submit">Use token</button>
</form>
<p id="state">Enter your token to see pending approvals.</p>
<p id="message" role="status"></p>
<table hidden id="table">
  <thead><tr><th>Tool</th><th>Tier</th><th>Input (redacted)</th><th>Why</th><th>Requested by</th><th>Session</th><th>Expires</th><th>Decision</th></tr></thead>
  <tbody id="rows"></tbody>
</table>
<script src="/inbox.js"></script>
</body>
</html>
`;

/** The page's script. */
export const INBOX_SCRIPT = `'use strict';
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem('keel-token') || '';

function cell(row, text, className) {
  const td = document.createElement('td');
  if (className) td.className = className;
  td.textContent = text;
  row.appendChild(td);
  return td;
}

function say(text, kind) {
  $('message').textContent = text;
  $('message').dataset.kind = kind;
}

async function api(method, path, body) {
  const res = await fetch(path, {
    method,
    headers: { authorization: 'Bearer ' + token, ...(body ? { 'content-type': 'application/json' } : {}) },
    ...(body ? { body: JSON.stringify(body) } : {}),
  });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error((json.error && json.error.message) || res.status + ' ' + res.statusText);
  return json;
}

async function decide(request, decision, reason, buttons) {
  buttons.forEach((b) => (b.disabled = true));
  try {
    await api('POST', '/v1/sessions/' + encodeURIComponent(request.sessionId) + '/approvals/' + encodeURIComponent(request.requestId), { decision, ...(reason ? { reason } : {}) });
    say((decision === 'approve' ? 'Approved ' : 'Rejected ') + request.tool + ' (' + request.requestId + ')', 'ok');
    await refresh();
  } catch (err) {
    say('Could not ' + decision + ' ' + request.tool + ': ' + err.message, 'error');
    buttons.forEach((b) => (b.disabled = false));
  }
}

function render(pending) {
  const rows = $('rows');
  const focused = document.activeElement && document.activeElement.name === 'reason' ? document.activeElement.closest('tr').dataset.request : undefined;
  const drafts = {};
  rows.querySelectorAll('tr').forEach((tr) => (drafts[tr.dataset.request] = tr.querySelector('input[name=reason]').value));
  rows.replaceChildren();
  for (const r of pending) {
    const tr = document.createElement('tr');
    tr.dataset.request = r.requestId;
    tr.dataset.tool = r.tool;
    cell(tr, r.tool);
    cell(tr, r.risk, 'tier tier-' + r.risk);
    const input = cell(tr, '');
    const pre = document.createElement('pre');
    pre.textContent = JSON.stringify(r.input, null, 2);
    input.appendChild(pre);
    const why = cell(tr, r.reason);
    if (r.untrustedSources && r.untrustedSources.length) {
      const p = document.createElement('div');
      p.className = 'untrusted';
      p.textContent = 'After untrusted data from: ' + r.untrustedSources.map((s) => s.tool).join(', ');
      why.appendChild(p);
    }
    cell(tr, r.requestedBy);
    cell(tr, r.sessionId);
    cell(tr, new Date(r.expiresAt).toLocaleString());
    const actions = cell(tr, '');
    const reason = document.createElement('input');
    reason.name = 'reason';
    reason.placeholder = 'reason';
    reason.value = drafts[r.requestId] || '';
    const approve = document.createElement('button');
    approve.textContent = 'Approve';
    approve.name = 'approve';
    const reject = document.createElement('button');
    reject.textContent = 'Reject';
    reject.name = 'reject';
    approve.onclick = () => decide(r, 'approve', reason.value.trim(), [approve, reject]);
    reject.onclick = () => decide(r, 'reject', reason.value.trim(), [approve, reject]);
    actions.append(reason, ' ', approve, ' ', reject);
    rows.appendChild(tr);
    if (focused === r.requestId) reason.focus();
  }
  $('table').hidden = pending.length === 0;
}

async function refresh() {
  if (!token) return;
  try {
    const listing = await api('GET', '/v1/approvals');
    render(listing.pending);
    const waiting = listing.unavailable.length ? ' · ' + listing.unavailable.length + ' session(s) did not answer (no worker?)' : '';
    $('state').textContent = (listing.pending.length ? listing.pending.length + ' pending' : 'Nothing waiting') + waiting + ' · updated ' + new Date().toLocaleTimeString();
  } catch (err) {
    $('state').textContent = 'Could not list approvals: ' + err.message;
  }
}

$('login').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token').value.trim();
  sessionStorage.setItem('keel-token', token);
  say('', '');
  void refresh();
});
setInterval(() => void refresh(), 2000);
void refresh();
`;
