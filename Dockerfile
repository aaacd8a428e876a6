# syntax=docker/dockerfile:1
# ecommerce-monolith: a multi-stage build.
#   docker build -t ecommerce-monolith:local .      (or: docker compose up --build)
# The only network access at build time is crates.io (Cargo.lock, --locked); the
# Swagger UI is vendored and the migrations are embedded by sqlx::migrate!.

ARG RUST_VERSION=1.95

# ---- builder ------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# 1. Dependencies only, in their own layer: rebuilt when a Cargo.toml or Cargo.lock
#    changes, not when the sources do. Empty stand-ins for both crates of the workspace:
#    the service and its tools (crates/lab).
COPY Cargo.toml Cargo.lock ./
COPY crates/lab/Cargo.toml crates/lab/Cargo.toml
RUN mkdir -p src crates/lab/src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && echo 'fn main() {}' > crates/lab/src/main.rs \
 && touch crates/lab/src/lib.rs \
 && cargo build --release --locked --workspace \
 && rm -rf src crates/lab/src

# 2. The real sources. sqlx::migrate!("./migrations") embeds the SQL at compile time.
#    touch: make sure cargo sees the sources as newer than the stand-ins' artifacts.
#    Two binaries: the server, and the tools it runs for `loadgen`, `faults`, `mode`,
#    `outbox` and `lab` (ecommerce-lab, beside it). The storefront (web/) and the
#    experiments (lab/) are embedded in them at compile time, like the migrations.
COPY src ./src
COPY crates/lab/src ./crates/lab/src
COPY migrations ./migrations
COPY web ./web
COPY lab ./lab
RUN touch src/main.rs src/lib.rs crates/lab/src/main.rs crates/lab/src/lib.rs \
 && cargo build --release --locked --workspace \
 && cp target/release/ecommerce-monolith target/release/ecommerce-lab /usr/local/bin/

# ---- runtime ------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=builder /usr/local/bin/ecommerce-monolith /usr/local/bin/ecommerce-lab /usr/local/bin/

USER 10001:10001
ENV BIND_ADDR=0.0.0.0:8000
EXPOSE 8000

# `healthcheck` GETs http://127.0.0.1:8000/health and exits 0 or 1 (no curl in here).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["ecommerce-monolith", "healthcheck"]

ENTRYPOINT ["ecommerce-monolith"]
CMD ["serve"]
