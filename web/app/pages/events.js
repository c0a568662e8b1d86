import { html } from '../ui.js';

export function EventsPage() {
  return html`<h1>Events</h1><p class="muted">Coming soon.</p>`;
}
