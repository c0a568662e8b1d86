// Every module Tessera runs, in migration order. A module is a folder under src/modules/<name>.
import type { TesseraModule } from '../kit/module.ts';
import { booksModule } from './books/index.ts';
import { codesModule } from './codes/index.ts';
import { eventsModule } from './events/index.ts';
import { senderModule } from './sender/index.ts';

export function allModules(): TesseraModule[] {
  return [codesModule, booksModule, eventsModule, senderModule];
}
