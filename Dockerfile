# Multi-stage build: compile the release binaries, then copy them into a small runtime image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin api --bin worker --bin smsctl \
 && cp target/release/api target/release/worker target/release/smsctl /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 smscode
COPY --from=build /usr/local/bin/api /usr/local/bin/worker /usr/local/bin/smsctl /usr/local/bin/
USER smscode
EXPOSE 8000
# `command:` in docker-compose.yml picks the binary: api or worker.
CMD ["api"]
