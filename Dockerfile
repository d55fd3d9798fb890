# syntax=docker/dockerfile:1
# Production image for the ratelimit daemon and admin CLI (see docs/deploy-fly.md).
#
# Base image: Node 22 LTS (maintained until April 2027; Node 20 reached end of life on
# 2026-04-30), pinned by the digest of its multi-arch index so a rebuild gets the same bytes.
# The project itself still runs on Node >= 20 (package.json "engines"). To move to a newer
# patch release, print the current digest and replace it in BOTH stages:
#   docker buildx imagetools inspect node:22-bookworm-slim --format '{{json .Manifest.Digest}}'
# (or: crane digest node:22-bookworm-slim). Dependabot's "docker" ecosystem proposes the same.
ARG NODE_IMAGE=node:22-bookworm-slim@sha256:53ada149d435c38b14476cb57e4a7da73c15595aba79bd6971b547ceb6d018bf

############################
# Build: all dependencies, compile TypeScript into dist/
############################
FROM ${NODE_IMAGE} AS build
WORKDIR /app

# Dependencies first so this layer is cached while only sources change.
COPY package.json package-lock.json ./
# --omit=optional: the npm PostgreSQL server (~60 MB) is for the embedded default, which this image does
# not use (it runs with DATABASE_URL).
RUN npm ci --ignore-scripts --omit=optional

COPY . .
# The same build `npm ci` runs through the "prepare" script.
RUN npm run build

############################
# Runtime: production dependencies only, non-root
############################
FROM ${NODE_IMAGE} AS runtime

# tini as PID 1 forwards SIGTERM/SIGINT to node and reaps zombies, so the daemon's
# graceful drain runs under plain `docker run` as well as on Fly.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# RATELIMIT_DATA_DIR: the spool of decisions made while the database is unreachable (and the
# embedded database, unused here). /app stays root-owned and read-only for the process, so the
# data lives in /data, made below for the runtime user. Mount a volume there to keep it across
# container replacements (ops/compose/compose.yaml does; on Fly see docs/deploy-fly.md).
ENV NODE_ENV=production \
    PORT=8081 \
    HOST=0.0.0.0 \
    RATELIMIT_DATA_DIR=/data

WORKDIR /app

COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts \
 && npm cache clean --force

COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
# SQL read at run time by `ratelimit db init` and `serve`: the migrations, then the current source
# of every SQL function (re-applied after them). Another folder of SQL files needs its own line.
COPY --from=build /app/src/db/migrations ./src/db/migrations
COPY --from=build /app/src/db/functions ./src/db/functions

# `ratelimit` on PATH, for Fly's release_command and `fly ssh console -C "ratelimit stats"`.
# The data dir belongs to the runtime user, mode 0700: the spool holds hashes and masks only,
# but nobody else on the machine needs to read them.
RUN chmod 0755 /app/bin/ratelimit.js \
 && ln -s /app/bin/ratelimit.js /usr/local/bin/ratelimit \
 && install -d -o node -g node -m 0700 /data

# The application files stay owned by root (read-only for the process); the official
# image's unprivileged "node" user (uid 1000) runs it.
USER node

EXPOSE 8081
VOLUME ["/data"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["ratelimit", "serve"]
