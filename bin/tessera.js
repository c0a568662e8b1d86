#!/usr/bin/env node
// Runs the TypeScript sources directly through tsx: one code path for dev, CI and containers.
import { register } from 'tsx/esm/api';

register();
await import('../src/cli/main.ts');
