# syntax=docker/dockerfile:1.7
#
# The slop-server image: a release build in the Rust image, copied into a
# distroless runtime (glibc and CA certificates, no shell, no package
# manager) that runs as an unprivileged user.
#
#   docker build -t slop-server .
#   docker run --rm -p 3000:3000 -p 9090:9090 slop-server
#
# With no configuration the container runs on its embedded defaults
# (development: sessions in memory, SQLite in /data). A deployment sets
# APP_ENV=production and the secrets: see deploy/kubernetes/ and the
# README's "Operating it".

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
# The whole workspace: build.rs compiles proto/ (protox, no protoc needed).
COPY . .
# The caches keep the registry and incremental artefacts between builds on
# one builder; the binary is copied out of the cached target directory.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p slop-server \
    && install -D -m 0755 target/release/slop-server /out/slop-server \
    && install -d -m 0700 /out/data

FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="slop-server" \
      org.opencontainers.image.description="Slop Studios backend core: accounts, sessions and notification streams over gRPC, grpc-web, REST and WebSocket"
COPY --from=build /out/slop-server /usr/local/bin/slop-server
# The working directory is where the development default `sqlite:slop.db`
# lives; it belongs to the unprivileged user (65532, "nonroot").
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532
# 3000: every front door (gRPC, grpc-web, REST, WebSocket, health).
# 9090: Prometheus metrics (METRICS_ADDR), never the public port.
EXPOSE 3000 9090
# No HEALTHCHECK: there is no shell or client in the image; orchestrators
# probe gRPC health on 3000 (Kubernetes `grpc:` probes) or
# GET /health/ready and /health/live.
ENTRYPOINT ["/usr/local/bin/slop-server"]
