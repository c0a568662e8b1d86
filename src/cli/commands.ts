// Module subcommands (`tessera codes generate`, `tessera seed events`) hang off the main program here.
import type { Command } from 'commander';
import type { Kit } from '../kit/kit.ts';
import { registerCodesCommands } from '../modules/codes/cli.ts';
import { registerSeedEvents } from '../modules/events/seed.ts';

export interface CliHelpers {
  withKit<T>(fn: (kit: Kit) => Promise<T>): Promise<T>;
  positiveInt(value: string): number;
}

export function registerModuleCommands(program: Command, helpers: CliHelpers): void {
  registerSeedEvents(program, helpers.positiveInt);
  registerCodesCommands(program, helpers);
}
