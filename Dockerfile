# syntax=docker/dockerfile:1
# Build: the Rust toolchain plus what librdkafka's bundled build needs (make, g++, zlib).
FROM rust:1.95-bookworm AS build
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential zlib1g-dev python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first, so that a source change does not rebuild them.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/loadgen \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/loadgen/main.rs \
    && touch src/lib.rs \
    && cargo build --release --locked \
    && rm -rf src
COPY migrations migrations
COPY src src
RUN touch src/main.rs src/lib.rs && cargo build --release --locked --bin post-rate

# Run: a small Debian with CA certificates, as a non-root user.
FROM debian:bookworm-slim
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --no-create-home post-rate
COPY --from=build /src/target/release/post-rate /usr/local/bin/post-rate
USER post-rate
ENV BIND_ADDR=0.0.0.0:8080 RUST_LOG=info
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=20s --retries=3 \
    CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["post-rate"]
CMD ["serve"]
