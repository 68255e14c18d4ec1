# Multi-stage build: compile the release binaries, then copy them into a small runtime image.
# Needs BuildKit (the default builder since Docker 23, and always under `docker compose`) for
# the cache mounts.
#
# Pinned bases: the build stage's Rust is rust-toolchain.toml's channel (tests/it/compose.rs
# fails when they differ), and both stages are the same Debian release (same glibc), the
# runtime at a fixed point release. Bump them together.
FROM rust:1.95.0-trixie AS build
WORKDIR /src
COPY . .
# The cache mounts keep the downloaded crates and the target dir from one build to the next:
# after a source change only our own crates recompile, not the dependencies. `sharing=locked`
# because compose builds the api and worker images at the same time from this file. A cache
# mount is not part of the image, hence the binaries are copied out in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked --bin api --bin worker --bin smsctl \
 && cp target/release/api target/release/worker target/release/smsctl /usr/local/bin/

FROM debian:13.3-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 smscode
COPY --from=build /usr/local/bin/api /usr/local/bin/worker /usr/local/bin/smsctl /usr/local/bin/
USER smscode
# 8000: the api; 9100: the worker's /healthz, /readyz and /metrics (WORKER_METRICS_ADDR).
EXPOSE 8000 9100
# `command:` in docker-compose.yml picks the binary: api, worker, or smsctl for operations.
CMD ["api"]
