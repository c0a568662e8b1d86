// Every module Tessera runs, in migration order. A module is a folder under src/modules/<name>.
import type { TesseraModule } from '../kit/module.ts';
import { eventsModule } from './events/index.ts';
import { booksModule } from './books/index.ts';

export function allModules(): TesseraModule[] {
  return [booksModule, eventsModule];
}
