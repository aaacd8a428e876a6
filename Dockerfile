# syntax=docker/dockerfile:1
# ecommerce-monolith: a multi-stage build.
#   docker build -t ecommerce-monolith:local .      (or: docker compose up --build)
# The only network access at build time is crates.io (Cargo.lock, --locked); the
# Swagger UI is vendored and the migrations are embedded by sqlx::migrate!.

ARG RUST_VERSION=1.95

# ---- builder ------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-bookworm AS builder
WORKDIR /build

# 1. Dependencies only, in their own layer: rebuilt when Cargo.toml/Cargo.lock change,
#    not when the sources do. Empty stand-ins for the binary and the library.
COPY Cargo.toml Cargo.lock ./
RUN mkdir src \
 && echo 'fn main() {}' > src/main.rs \
 && touch src/lib.rs \
 && cargo build --release --locked \
 && rm -rf src

# 2. The real sources. sqlx::migrate!("./migrations") embeds the SQL at compile time.
#    touch: make sure cargo sees the sources as newer than the stand-ins' artifacts.
COPY src ./src
COPY migrations ./migrations
RUN touch src/main.rs src/lib.rs \
 && cargo build --release --locked \
 && cp target/release/ecommerce-monolith /usr/local/bin/ecommerce-monolith

# ---- runtime ------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 app \
 && useradd --system --uid 10001 --gid app --home-dir /nonexistent --shell /usr/sbin/nologin app

COPY --from=builder /usr/local/bin/ecommerce-monolith /usr/local/bin/ecommerce-monolith

USER 10001:10001
ENV BIND_ADDR=0.0.0.0:8000
EXPOSE 8000

# `healthcheck` GETs http://127.0.0.1:8000/health and exits 0 or 1 (no curl in here).
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
  CMD ["ecommerce-monolith", "healthcheck"]

ENTRYPOINT ["ecommerce-monolith"]
CMD ["serve"]
