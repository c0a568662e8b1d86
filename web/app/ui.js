// Small shared pieces: htm bound to Preact, polling, form fields, bars, charts, messages.
import htm from 'htm';
import { h } from 'preact';
import { useCallback, useEffect, useRef, useState } from 'preact/hooks';
import uPlot from 'uplot';

export const html = htm.bind(h);

/**
 * Runs fn now and every `ms` (and again when deps change); keeps the last good data and the last
 * error. Only the newest call's answer is kept: a slow answer to an earlier call (a poll overtaken
 * by a refresh after an action, or a page turned since) would show a state already left behind.
 */
export function usePoll(fn, ms, deps = []) {
  const [state, setState] = useState({ data: undefined, error: undefined, at: 0 });
  const fnRef = useRef(fn);
  fnRef.current = fn;
  const calls = useRef(0);
  const refresh = useCallback(async () => {
    const call = ++calls.current;
    try {
      const data = await fnRef.current();
      if (call === calls.current) setState({ data, error: undefined, at: Date.now() });
    } catch (error) {
      if (call === calls.current) setState((s) => ({ ...s, error }));
    }
  }, []);
  useEffect(() => {
    let stopped = false;
    let timer;
    const tick = async () => {
      await refresh();
      if (!stopped && ms) timer = setTimeout(tick, ms);
    };
    tick();
    return () => {
      stopped = true;
      clearTimeout(timer);
    };
  }, deps);
  return { ...state, refresh };
}

/**
 * Cursor paging for a list whose answers carry `next`: `cursor` is the page shown (undefined for
 * the first), `older(next)` turns to the page after, `newer()` back one, `first()` to the start.
 */
export function usePages() {
  const [stack, setStack] = useState([]);
  return {
    cursor: stack.at(-1),
    page: stack.length + 1,
    // A second click before the next page's answer came offers the same `next` again: ignored, or
    // the pager read "Page 3" over page 2's rows.
    older: (next) => setStack((s) => (s.at(-1) === next ? s : [...s, next])),
    newer: () => setStack((s) => s.slice(0, -1)),
    first: () => setStack((s) => (s.length === 0 ? s : [])),
  };
}

/** Previous / next page buttons for usePages; `next` is the answer's cursor to the page after. */
export function Pager({ pages, next, what }) {
  if (pages.page === 1 && !next) return null;
  return html`<nav class="pager" aria-label=${`Pages of ${what}`}>
    <button type="button" class="secondary" disabled=${pages.page === 1} onClick=${pages.newer}>Previous page</button>
    <span aria-live="polite">Page ${pages.page}</span>
    <button type="button" class="secondary" disabled=${!next} onClick=${() => pages.older(next)}>Next page</button>
  </nav>`;
}

let fieldSeq = 0;
/** A labelled control: label text, then the input given as children or as `input` props. */
export function Field({ label, hint, children, ...input }) {
  const id = useRef(input.id ?? `f${++fieldSeq}`).current;
  const hintId = hint ? `${id}-hint` : undefined;
  const control = children ?? html`<input id=${id} aria-describedby=${hintId} ...${input} />`;
  return html`<div class="field">
    <label for=${id}>${label}</label>
    ${children ? withId(children, id, hintId) : control}
    ${hint && html`<small id=${hintId}>${hint}</small>`}
  </div>`;
}
function withId(child, id, hintId) {
  if (child && typeof child === 'object' && child.props) {
    child.props.id = id;
    if (hintId) child.props['aria-describedby'] = hintId;
  }
  return child;
}

export function Alert({ error }) {
  if (!error) return null;
  return html`<p class="alert" role="alert">${error.message ?? String(error)}</p>`;
}

export function Notice({ children }) {
  return html`<p class="notice" role="status">${children}</p>`;
}

/** Several states of one total as a stacked bar, with the numbers as text for everyone. */
export function StackBar({ label, parts }) {
  const total = parts.reduce((s, p) => s + (p.value || 0), 0);
  const text = parts.map((p) => `${p.label} ${fmt(p.value)}`).join(', ');
  return html`<div class="stackbar">
    <div class="stackbar-track" role="img" aria-label=${`${label}: ${text}`}>
      ${parts.map(
        (p) =>
          total > 0 &&
          p.value > 0 &&
          html`<span class=${`seg ${p.cls}`} style=${`width:${(100 * p.value) / total}%`}></span>`,
      )}
    </div>
    <div class="legend" aria-hidden="true">
      ${parts.map((p) => html`<span><i class=${`dot ${p.cls}`}></i>${p.label} ${fmt(p.value)}</span>`)}
    </div>
  </div>`;
}

/** A native progress bar with its percentage beside it. */
export function Progress({ label, done, total }) {
  const pct = total > 0 ? Math.min(100, Math.round((100 * done) / total)) : 0;
  return html`<div class="progress">
    <progress max=${total || 1} value=${done || 0} aria-label=${label}></progress>
    <span>${fmt(done)} / ${fmt(total)} (${pct}%)</span>
  </div>`;
}

const PALETTE = ['#2563eb', '#dc2626', '#16a34a', '#d97706', '#7c3aed', '#0891b2', '#db2777', '#4b5563'];

/**
 * A uPlot time chart. data = [xs (unix seconds), ...ys]; series = [{label}] one per y.
 * The chart is redrawn in place when data changes; width follows the container. Its text for
 * screen readers gives each line's latest point and, with `totalLabel` (for counts, not rates),
 * each line's sum over the range shown.
 */
export function Chart({ title, data, series, height = 220, yLabel, totalLabel }) {
  const box = useRef(null);
  const plot = useRef(null);
  const key = series.map((s) => s.label).join('|');
  useEffect(() => {
    const el = box.current;
    const opts = {
      width: Math.max(200, el.clientWidth),
      height,
      legend: { live: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: true } },
      axes: [{}, { label: yLabel, size: 50 }],
      series: [
        {},
        ...series.map((s, i) => ({
          label: s.label,
          stroke: PALETTE[i % PALETTE.length],
          width: 2,
          points: { show: false },
        })),
      ],
    };
    plot.current = new uPlot(opts, data, el);
    const ro = new ResizeObserver(() =>
      plot.current?.setSize({ width: Math.max(200, el.clientWidth), height }),
    );
    ro.observe(el);
    return () => {
      ro.disconnect();
      plot.current?.destroy();
      plot.current = null;
    };
  }, [key, height]);
  useEffect(() => {
    plot.current?.setData(data);
  }, [data]);
  const last = series.map((s, i) => `${s.label} ${fmt(data[i + 1]?.at(-1) ?? 0)}`).join(', ');
  const sum = (ys) => (ys ?? []).reduce((a, y) => a + (y ?? 0), 0);
  const totals = series.map((s, i) => `${s.label} ${fmt(sum(data[i + 1]))}`).join(', ');
  const label = `${title}.${totalLabel && totals ? ` ${totalLabel}: ${totals}.` : ''} Latest: ${last || 'no data yet'}`;
  return html`<figure class="chart">
    <figcaption>${title}</figcaption>
    <div ref=${box} role="img" aria-label=${label}></div>
  </figure>`;
}

export function fmt(n, digits = 0) {
  if (n === undefined || n === null || Number.isNaN(n)) return '–';
  return Number(n).toLocaleString('en', { maximumFractionDigits: digits });
}

export function ago(ts) {
  if (!ts) return 'never';
  const s = Math.max(0, Math.round((Date.now() - new Date(ts).getTime()) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  return `${Math.floor(s / 3600)} h ago`;
}

export function when(ts) {
  return ts ? new Date(ts).toLocaleString('en-GB', { hour12: false }) : '–';
}

/**
 * After an action in a row replaced the button that had focus (Pause becomes Resume), focus went
 * to the page's start and a keyboard user lost their place: give it to the row's first enabled
 * button, or the row itself (tabindex="-1") when it has none left.
 */
export function refocus(container) {
  requestAnimationFrame(() => {
    if (!container?.isConnected) return;
    if (document.activeElement && document.activeElement !== document.body) return;
    (container.querySelector('button:not([disabled])') ?? container.closest('tr'))?.focus();
  });
}

/**
 * An Idempotency-Key. crypto.randomUUID exists only in secure contexts (https, localhost): a
 * dashboard opened over plain http on another host gets the fallback.
 */
const uuid = () =>
  globalThis.crypto?.randomUUID?.() ?? `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;

/**
 * One Idempotency-Key per submission of one form content: sending the same content again (a retry
 * after a failure or a timeout) reuses the key, so the server answers with what the first try may
 * already have made instead of making a second. New content, or `settled()`, starts a new key.
 */
export function useIdempotencyKey() {
  const attempt = useRef(null);
  return {
    keyFor(content) {
      if (attempt.current?.content !== content) attempt.current = { content, key: uuid() };
      return attempt.current.key;
    },
    settled() {
      attempt.current = null;
    },
  };
}

/** Focus for the element with this id once it is rendered (it replaces the control that had it). */
export function focusSoon(id) {
  requestAnimationFrame(() => document.getElementById(id)?.focus());
}

/** Runs an async action with busy/error state for a button or form. */
export function useAction() {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState(undefined);
  const run = useCallback(async (fn) => {
    setBusy(true);
    setError(undefined);
    try {
      return await fn();
    } catch (err) {
      setError(err);
      return undefined;
    } finally {
      setBusy(false);
    }
  }, []);
  return { busy, error, run, setError };
}
