# An image for an agent of your own: the mesh's image (the repository's Dockerfile) with your file
# added under /app, where `@mesh/worker` and the rest of the mesh already are. Built from examples/:
#
#   docker build -f examples/agent.Dockerfile -t registry.example.com/my-agents:1.0 \
#     --build-arg MESH_IMAGE=registry.example.com/agent-mesh:0.1.0 examples
#
# and run by the Helm chart with worker.agents.word-stats: { image: …, main: agents/word-stats.ts }.
ARG MESH_IMAGE=agent-mesh:latest
FROM ${MESH_IMAGE}
# Owned by root, readable by the `node` user the image runs as (the mesh's own files are the same).
COPY custom-agent.ts ./agents/word-stats.ts
# An agent with npm dependencies of its own brings its own package.json and lock file; Node finds
# them in agents/node_modules first and @mesh/* in /app/node_modules:
#   COPY package.json package-lock.json ./agents/
#   USER root
#   RUN cd agents && npm ci --omit=dev --no-audit --no-fund
#   USER node
CMD ["agents/word-stats.ts"]
