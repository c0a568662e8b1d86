import { html } from '../ui.js';

export function BooksPage() {
  return html`<h1>Books</h1><p class="muted">Coming soon.</p>`;
}
