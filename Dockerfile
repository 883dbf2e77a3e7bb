# One image for the four services and the `mesh` CLI. The service is chosen by the command:
#
#   docker run agent-mesh services/orchestrator/src/main.ts      (the default, port 8080)
#   docker run agent-mesh services/worker/src/main.ts            (port 8082)
#   docker run agent-mesh services/aggregator/src/main.ts        (port 8083)
#   docker run agent-mesh services/dlq-triage/src/main.ts        (port 8084)
#   docker run agent-mesh packages/cli/src/main.ts topics init   (and `schemas register`)
#
# Node runs the TypeScript sources directly (type stripping, Node >= 22.18): there is no build step,
# and typescript, eslint and prettier (devDependencies) are not installed.
ARG NODE_IMAGE=node:22-slim

# --- manifests: only the package.json files, so the dependency layer below is rebuilt only when a
# manifest or the lock file changes, not on every source edit.
FROM ${NODE_IMAGE} AS manifests
WORKDIR /src
COPY packages ./packages
COPY services ./services
RUN find packages services -type f ! -name package.json -delete \
 && find packages services -depth -type d -empty -delete

# --- deps: production dependencies of every workspace, exactly as locked.
# packages/testkit (the test harness, which pulls in testcontainers and its Docker/SSH clients) is
# left out of the build context by .dockerignore: nothing at run time imports it, and npm ci installs
# the remaining workspaces from the same lock file.
FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
COPY --from=manifests /src/ ./
RUN --mount=type=cache,target=/root/.npm,sharing=locked \
    npm ci --omit=dev --ignore-scripts --no-audit --no-fund
# The root postinstall, run by hand because of --ignore-scripts: kafkajs allocation fixes (see the file).
COPY packages/kafka/patches/kafkajs.mjs ./packages/kafka/patches/kafkajs.mjs
RUN node packages/kafka/patches/kafkajs.mjs

# --- runtime
FROM ${NODE_IMAGE} AS runtime
LABEL org.opencontainers.image.title="agent-mesh" \
      org.opencontainers.image.description="Kafka-native multi-agent event mesh: orchestrator, worker, aggregator, dlq-triage and the mesh CLI" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV NODE_ENV=production
WORKDIR /app
# Everything is owned by root and only readable by the `node` user that runs it: the process cannot
# change its own code, and the image works with a read-only root filesystem (only /tmp is written).
COPY --from=deps /app/ ./
COPY schemas ./schemas
COPY packages ./packages
COPY services ./services
USER node
EXPOSE 8080 8082 8083 8084
STOPSIGNAL SIGTERM
# /healthz of whichever service runs: MESH_HTTP_PORT when set, else the default port of the service
# named on the command line of PID 1 (or of `docker-init`'s child: the path is in either cmdline).
HEALTHCHECK --interval=15s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "-e", "const ports={orchestrator:8080,worker:8082,aggregator:8083,'dlq-triage':8084};let port=process.env.MESH_HTTP_PORT;if(!port){const cmd=require('node:fs').readFileSync('/proc/1/cmdline','utf8');port=ports[(/services\\/([a-z-]+)\\//.exec(cmd)??[])[1]]??8080}fetch('http://127.0.0.1:'+port+'/healthz',{signal:AbortSignal.timeout(4000)}).then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
ENTRYPOINT ["node"]
CMD ["services/orchestrator/src/main.ts"]
