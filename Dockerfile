# syntax=docker/dockerfile:1
#
# Sentinel container image.
#   docker build -t sentinel .                  # slim runtime: HTTP backends and static binaries
#   docker build -t sentinel:full --target full .  # + node/npx and python/uvx for stdio backends
# See docs/deployment.md.

# ---- builder -----------------------------------------------------------------------------
# The official Rust image, pinned to the same Debian release as the runtime below so the
# binary's glibc matches (rust:1 alone follows the newest Debian), and to the Rust release
# build/text-order.txt was made with: its symbol names carry a hash of the toolchain, and with
# another release the code layout it gives (a smaller idle RSS, docs/performance.md) is lost.
FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bins \
 && install -D -m 0755 target/release/sentinel /out/sentinel

# ---- full: runtime plus the usual stdio-backend runtimes ----------------------------------
# MCP servers launched as `npx -y ...` or `uvx ...` need node and uv inside the container.
FROM debian:bookworm-slim AS full
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tini nodejs npm python3 \
 && rm -rf /var/lib/apt/lists/*
# uv/uvx from Astral's official image.
COPY --from=ghcr.io/astral-sh/uv:latest /uv /uvx /usr/local/bin/
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/sentinel --create-home --shell /usr/sbin/nologin sentinel \
 && mkdir -p /etc/sentinel && chown sentinel:sentinel /var/lib/sentinel
COPY --from=builder /out/sentinel /usr/local/bin/sentinel
USER 10001:10001
WORKDIR /var/lib/sentinel
# npm and uv caches live in the data volume, which the sentinel user can write.
ENV HOME=/var/lib/sentinel \
    npm_config_cache=/var/lib/sentinel/.npm \
    UV_CACHE_DIR=/var/lib/sentinel/.cache/uv
EXPOSE 8800
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "http://127.0.0.1:8800/health"]
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sentinel", "serve", "-c", "/etc/sentinel/sentinel.toml"]

# ---- runtime (default target) -------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# curl is only for the HEALTHCHECK; tini reaps the stdio backends' orphaned grandchildren.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl tini \
 && rm -rf /var/lib/apt/lists/*
RUN useradd --system --uid 10001 --user-group --home-dir /var/lib/sentinel --create-home --shell /usr/sbin/nologin sentinel \
 && mkdir -p /etc/sentinel && chown sentinel:sentinel /var/lib/sentinel
COPY --from=builder /out/sentinel /usr/local/bin/sentinel
USER 10001:10001
WORKDIR /var/lib/sentinel
ENV HOME=/var/lib/sentinel
EXPOSE 8800
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD ["curl", "-fsS", "http://127.0.0.1:8800/health"]
# The config decides where Sentinel listens: deploy/sentinel.docker.toml sets 0.0.0.0:8800
# with allow_public = true. Without a config file the embedded default stays on loopback.
ENTRYPOINT ["/usr/bin/tini", "--"]
CMD ["sentinel", "serve", "-c", "/etc/sentinel/sentinel.toml"]
