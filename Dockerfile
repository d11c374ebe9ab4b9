# One image for all three rtb services; compose.yaml picks the entry point per service:
#   node --import tsx services/api/src/main.ts       (the default CMD below)
#   node --import tsx services/leader/src/main.ts
#   node --import tsx services/agent/src/main.ts
# and the `rtb` CLI is on PATH (`docker compose exec api rtb status`).
# The TypeScript sources run as they are, through tsx (a runtime dependency): no build step.
#
# Signals: compose runs the containers with `init: true` (docker-init, i.e. tini, as PID 1),
# which forwards SIGTERM to node and reaps zombies. With plain `docker run`, pass --init.

FROM node:24-bookworm-slim

ENV NODE_ENV=production
WORKDIR /app

# Dependencies first, from the manifests only, so editing sources does not reinstall them.
# Every workspace's package.json is needed for `npm ci` to match package-lock.json.
COPY package.json package-lock.json ./
COPY packages/protocol/package.json packages/protocol/
COPY packages/runtime/package.json packages/runtime/
COPY db/package.json db/
COPY services/api/package.json services/api/
COPY services/leader/package.json services/leader/
COPY services/agent/package.json services/agent/
COPY cli/package.json cli/
# The CLI's launcher too: npm links a command (node_modules/.bin/rtb) only to a file that exists.
COPY cli/bin/ cli/bin/
COPY test/package.json test/
RUN npm ci --omit=dev --no-audit --no-fund \
 && npm cache clean --force

# Then the sources. They stay owned by root (read-only to the app); tsx caches its
# transforms under the OS temp directory, which the node user can write.
COPY tsconfig.base.json tsconfig.json ./
COPY packages/ packages/
COPY db/ db/
COPY services/ services/
COPY cli/ cli/

# npm ci linked the workspaces' commands here: `rtb` (cli/bin/rtb.js).
ENV PATH=/app/node_modules/.bin:$PATH

USER node

# The api listens on RTB_API_HOST (port 8080); the leader and agents serve /metrics and
# /readyz on RTB_METRICS_PORT (compose: 9464).
EXPOSE 8080
STOPSIGNAL SIGTERM
CMD ["node", "--import", "tsx", "services/api/src/main.ts"]
