// A Tessera process for benchmarks: the real platform on a given database, printing its URL.
// Access logs off (LOG_LEVEL=warn): the figure is the platform, not stdout throughput.
import { loadConfig, type Role } from '../src/kit/config.ts';
import { allModules } from '../src/modules/index.ts';
import { createPlatform } from '../src/platform.ts';

const config = loadConfig({
  ...process.env,
  TESSERA_CONFIG: 'none',
  LOG_LEVEL: process.env.LOG_LEVEL ?? 'warn',
  HOST: '127.0.0.1',
  PORT: '0',
});
const platform = await createPlatform({
  config,
  role: (process.argv[2] ?? 'all') as Role,
  modules: allModules(),
});
await platform.start({ host: '127.0.0.1', port: 0 });
process.stdout.write(`LISTENING ${platform.address()}\n`);
const stop = () => platform.stop().then(() => process.exit(0));
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
