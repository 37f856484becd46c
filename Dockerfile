# Keel worker / demo services image (the worker runs the tools module named by KEEL_TOOLS; put yours in). Used by docker-compose.yml (services keel-worker and keel-demo):
#   docker build -t keel:local .
#   docker run --rm -e TEMPORAL_ADDRESS=host.docker.internal:7233 -e ANTHROPIC_API_KEY=... keel:local
# Keel runs its TypeScript sources through tsx (bin/keel.js), so there is no build step.

# --- dependencies: better-sqlite3 may compile from source, which needs python3, make and g++ ---
FROM node:20-bookworm-slim AS deps
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# Exactly the locked tree; runtime dependencies only (tsx, the Temporal SDK, zod, ... are all runtime deps).
RUN npm ci --omit=dev && npm cache clean --force

# --- runtime: no compilers ---
FROM node:20-bookworm-slim
ENV NODE_ENV=production \
    KEEL_DATA_DIR=/app/.keel \
    KEEL_TOOLS=examples/support-desk/tools.ts
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY . .
# The data directory (logs, demo ledger, ...) is the only place the app writes.
RUN mkdir -p /app/.keel && chown node:node /app/.keel
USER node
CMD ["node", "bin/keel.js", "worker"]
