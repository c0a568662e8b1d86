import { html } from '../ui.js';

export function CodesPage() {
  return html`<h1>Codes</h1><p class="muted">Coming soon.</p>`;
}
