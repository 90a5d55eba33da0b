# syntax=docker/dockerfile:1.7
#
# Container images of clawfleet, built from this checkout.
#
#   docker build -t clawfleet:local .                                  # the services and the CLI
#   docker build -t clawfleet-openclaw:local --target openclaw .       # the same, plus Node.js and OpenClaw
#
# Every binary of the workspace is in /usr/local/bin of both images:
# clawfleet-dispatcher, clawfleet-agent, clawfleet-health-monitor,
# clawfleet-log-aggregator, clawfleet-alerter, clawfleet-console and the clawfleet CLI. They run as the
# unprivileged user `clawfleet` (uid 10001) under tini, from /data, the
# directory for state (the log aggregator's index; OpenClaw's state in the
# openclaw image). Mount a volume there for the services that keep state:
# the image declares no VOLUME, so that agents and dispatchers do not each
# get an anonymous volume they never use.
#
# Nothing listens on a non-loopback address by default: the services'
# defaults stay on 127.0.0.1, and docker-compose.yml and deploy/k8s set
# `metrics_addr` to 0.0.0.0 for the containers.

ARG RUST_VERSION=1.95
ARG NODE_VERSION=24.21.0
ARG OPENCLAW_VERSION=2026.9.6

# --- build: every binary of the workspace, in release mode ------------------
FROM rust:${RUST_VERSION}-bookworm AS build
WORKDIR /src
COPY . .
# The registry, git checkouts and target directory are cache mounts, so a
# rebuild after a source change compiles only what changed. The target
# directory is not part of the image: the binaries are copied out of it in
# the same step. The command is the one in the README.
RUN --mount=type=cache,id=clawfleet-cargo-registry,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,id=clawfleet-cargo-git,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,id=clawfleet-target,target=/src/target,sharing=locked \
    set -eux; \
    cargo build --release --locked -p clawfleet-dispatcher -p clawfleet-agent -p clawfleet-health-monitor -p clawfleet-log-aggregator -p clawfleet-alerter -p clawfleet-console -p clawfleet; \
    mkdir -p /out; \
    for bin in clawfleet-dispatcher clawfleet-agent clawfleet-health-monitor clawfleet-log-aggregator clawfleet-alerter clawfleet-console clawfleet; do \
        cp "target/release/$bin" /out/; \
    done

# --- openclaw: the binaries plus Node.js and OpenClaw --------------------------
# For agents with the `openclaw` executor and for the OpenClaw gateway they
# attach to (`openclaw gateway run`). OpenClaw needs Node.js 24.16 or later
# below 25.
FROM node:${NODE_VERSION}-bookworm-slim AS openclaw
ARG OPENCLAW_VERSION
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl tini; \
    rm -rf /var/lib/apt/lists/*
RUN --mount=type=cache,id=clawfleet-npm,target=/root/.npm \
    set -eux; \
    npm install --global --omit=dev --no-audit --no-fund "openclaw@${OPENCLAW_VERSION}"; \
    npm ls --global openclaw
RUN set -eux; \
    groupadd --system --gid 10001 clawfleet; \
    useradd --system --uid 10001 --gid clawfleet --home-dir /data --shell /usr/sbin/nologin clawfleet; \
    mkdir -p /data; \
    chown clawfleet:clawfleet /data
COPY --from=build /out/ /usr/local/bin/
# OpenClaw keeps its state (sessions, agent databases) under /data/openclaw;
# no telemetry, update checks or mDNS announcements from a container.
ENV HOME=/data \
    OPENCLAW_STATE_DIR=/data/openclaw \
    DO_NOT_TRACK=1 \
    OPENCLAW_NO_AUTO_UPDATE=1 \
    OPENCLAW_DISABLE_BONJOUR=1
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["clawfleet", "--help"]

# --- runtime (the default target): the binaries on a slim Debian ---------------
FROM debian:bookworm-slim AS runtime
# ca-certificates for TLS to NATS or an OpenClaw gateway, curl for the
# health checks of docker-compose.yml, tini to reap what executors leave.
RUN set -eux; \
    apt-get update; \
    apt-get install -y --no-install-recommends ca-certificates curl tini; \
    rm -rf /var/lib/apt/lists/*
RUN set -eux; \
    groupadd --system --gid 10001 clawfleet; \
    useradd --system --uid 10001 --gid clawfleet --home-dir /data --shell /usr/sbin/nologin clawfleet; \
    mkdir -p /data; \
    chown clawfleet:clawfleet /data
COPY --from=build /out/ /usr/local/bin/
ENV HOME=/data
USER 10001:10001
WORKDIR /data
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["clawfleet", "--help"]
