// Message templates: Mustache `{{variable}}` syntax. The HTML body escapes every variable (`{{{x}}}`
// opts out, as Mustache documents); subject and text bodies are plain text and are not escaped.
import Mustache from 'mustache';
import { badRequest } from '../../kit/errors.ts';

export interface Template {
  subject: string;
  html?: string;
  text?: string;
}

export interface Rendered {
  subject: string;
  html?: string;
  text?: string;
}

const plain = { escape: (v: unknown) => String(v) };

/** Rejects a template Mustache cannot parse, naming the part to fix. */
export function validateTemplate(t: Template): void {
  if (!t.html && !t.text) throw badRequest('template needs an html or a text body (or both)');
  for (const part of ['subject', 'html', 'text'] as const) {
    const source = t[part];
    if (source === undefined) continue;
    try {
      Mustache.parse(source);
    } catch (err) {
      throw badRequest(`template.${part} is not a valid {{template}}: ${(err as Error).message}`);
    }
  }
}

export function render(t: Template, view: Record<string, unknown>): Rendered {
  return {
    subject: Mustache.render(t.subject, view, undefined, plain),
    html: t.html === undefined ? undefined : Mustache.render(t.html, view),
    text: t.text === undefined ? undefined : Mustache.render(t.text, view, undefined, plain),
  };
}
