import { html } from '../ui.js';

export function SenderPage() {
  return html`<h1>Sender</h1><p class="muted">Coming soon.</p>`;
}
