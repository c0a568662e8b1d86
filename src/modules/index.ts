// Every module Tessera runs, in migration order. A module is a folder under src/modules/<name>.
import type { TesseraModule } from '../kit/module.ts';
import { eventsModule } from './events/index.ts';
import { booksModule } from './books/index.ts';
import { codesModule } from './codes/index.ts';

export function allModules(): TesseraModule[] {
  return [codesModule, booksModule, eventsModule];
}
