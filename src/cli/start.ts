// The launcher: picks the role, listens, and owns the process signals. SIGTERM/SIGINT drain
// gracefully (exit 0); a second signal or the drain timeout exits at once.
import type { Config, Role } from '../kit/config.ts';
import { moduleLogger } from '../kit/log.ts';
import type { TesseraModule } from '../kit/module.ts';
import { allModules } from '../modules/index.ts';
import { createPlatform, type Platform } from '../platform.ts';

export async function startCommand(
  config: Config,
  role: Role,
  modules: TesseraModule[] = allModules(),
): Promise<Platform> {
  const started = performance.now();
  const platform = await createPlatform({ config, role, modules });
  const log = moduleLogger(platform.kit.log, 'kit');
  let stopping = false;
  const shutdown = (signal: string) => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal }, 'SIGNAL_RECEIVED');
    const timer = setTimeout(() => {
      log.error({ timeoutMs: config.shutdownTimeoutMs }, 'SHUTDOWN_TIMEOUT');
      process.exit(1);
    }, config.shutdownTimeoutMs);
    timer.unref();
    platform.stop().then(
      () => process.exit(0),
      (err) => {
        log.error({ err }, 'SHUTDOWN_FAILED');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
  await platform.start({ host: config.host, port: config.port });
  log.info(
    {
      address: platform.address(),
      startupMs: Math.round(performance.now() - started),
      embedded: Boolean(platform.kit.embedded),
    },
    'TESSERA_STARTED',
  );
  return platform;
}
