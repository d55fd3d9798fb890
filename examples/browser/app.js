// The example page's script: checks the typed number with the browser client and shows what
// the daemon says. Imports the built browser entry by a relative path, so any static file
// server run from the repository root serves it (README.md beside this file).

import { BrowserRateLimitClient, RateLimitRequestError } from '../../dist/src/client/browser.js';
import { describeDecision } from './describe.js';

// Waits for a pause in typing: one check per number, not one per keystroke.
const DEBOUNCE_MS = 300;
// Keeps "next in …" counting down while the page is open.
const REFRESH_MS = 1000;

const params = new URLSearchParams(location.search);
const daemonUrl = params.get('daemon') ?? 'ws://127.0.0.1:8081/ws';

const phone = document.getElementById('phone');
const status = document.getElementById('status');
const callButton = document.getElementById('call');
const connection = document.getElementById('connection');

function show(kind, text) {
  status.dataset.kind = kind;
  status.textContent = text;
  // A hint, not protection: the backend's consume decides.
  callButton.disabled = kind !== 'allowed' && kind !== 'unavailable';
}

const client = new BrowserRateLimitClient({
  url: daemonUrl,
  // A page can only advise; the backend's consume is what protects the bill.
  failMode: 'open',
  onState(state, cause) {
    connection.dataset.state = state;
    connection.textContent =
      state === 'open' ? `Connected to ${daemonUrl}` : state === 'connecting' ? `Connecting to ${daemonUrl}…` : `Not connected: ${cause?.message ?? 'closed'}`;
  },
});

let latest = 0; // the newest check; older answers arriving late are dropped
let lastDecision;
let debounceTimer;

async function checkNow(number) {
  const seq = ++latest;
  show('checking', 'Checking…');
  try {
    const decision = await client.check(number);
    if (seq !== latest) return;
    lastDecision = decision;
    render();
  } catch (err) {
    if (seq !== latest) return;
    lastDecision = undefined;
    if (err instanceof RateLimitRequestError && err.code === 'invalid_phone_number') show('invalid', `Not a phone number we can call: ${err.message}`);
    else show('invalid', `Could not check this number: ${err.message}`);
  }
}

function render() {
  if (!lastDecision) return;
  const { kind, text } = describeDecision(lastDecision, Date.now());
  show(kind, text);
}

phone.addEventListener('input', () => {
  clearTimeout(debounceTimer);
  const number = phone.value.trim();
  if (number.length === 0) {
    latest++;
    lastDecision = undefined;
    show('idle', 'Type a number to see whether it can be called now.');
    return;
  }
  debounceTimer = setTimeout(() => void checkNow(number), DEBOUNCE_MS);
});

document.getElementById('call-form').addEventListener('submit', (event) => {
  event.preventDefault();
  show('idle', 'Here the page would send the number to your backend, which consumes with its token and places the call.');
});

setInterval(render, REFRESH_MS);
