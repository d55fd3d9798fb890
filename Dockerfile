# syntax=docker/dockerfile:1
# Production image for the ratelimit daemon and admin CLI (see DATABASE_SETUP.md).
# Node version: package.json "engines" says >=20.

############################
# Build: all dependencies, compile TypeScript into dist/
############################
FROM node:20-bookworm-slim AS build
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
FROM node:20-bookworm-slim AS runtime

# tini as PID 1 forwards SIGTERM/SIGINT to node and reaps zombies, so the daemon's
# graceful drain runs under plain `docker run` as well as on Fly.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini ca-certificates \
 && rm -rf /var/lib/apt/lists/*

ENV NODE_ENV=production \
    PORT=8081 \
    HOST=0.0.0.0

WORKDIR /app

COPY package.json package-lock.json ./
RUN npm ci --omit=dev --omit=optional --ignore-scripts \
 && npm cache clean --force

COPY --from=build /app/dist ./dist
COPY --from=build /app/bin ./bin
# SQL migrations are read at run time by `ratelimit db init`.
COPY --from=build /app/src/db/migrations ./src/db/migrations

# `ratelimit` on PATH, for Fly's release_command and `fly ssh console -C "ratelimit stats"`.
RUN chmod 0755 /app/bin/ratelimit.js \
 && ln -s /app/bin/ratelimit.js /usr/local/bin/ratelimit

# The application files stay owned by root (read-only for the process); the official
# image's unprivileged "node" user (uid 1000) runs it.
USER node

EXPOSE 8081
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["ratelimit", "serve"]
