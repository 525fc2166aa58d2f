# syntax=docker/dockerfile:1
#
# llmtap image: build in a pinned Rust image, run in distroless (glibc, ca-certificates, no shell).
#   docker build -t llmtap .
#   docker run --rm --read-only -v "$PWD/certs:/certs" --user "$(id -u):$(id -g)" -p 127.0.0.1:8080:8080 llmtap
# The CA directory /certs is the only path llmtap writes to (and the spool, /var/spool/llmtap, when
# PROXY_SPOOL_DIR points there); everything else can be read-only.

# Both stages are Debian 12 (bookworm), so the glibc the binary links against is the one it runs on.
FROM rust:1.95-slim-bookworm AS build
# aws-lc-sys (rustls' crypto provider) compiles C: a C compiler, cmake and clang for its build script.
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake clang gcc libc6-dev make pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Embedded at compile time as the built-in defaults (include_str!).
COPY addons-config ./addons-config
# A workspace member: cargo needs its manifest to load the workspace, even to build llmtap alone.
COPY bench ./bench
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin llmtap \
 && install -D -m 0755 target/release/llmtap /out/usr/local/bin/llmtap \
 && mkdir -p /out/certs \
 && mkdir -p /out/spool \
 && mkdir -m 1777 /out/spool/llmtap

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/usr/local/bin/llmtap /usr/local/bin/llmtap
# An empty CA directory owned by the image's non-root user, so an anonymous or named volume there
# starts out writable. With a bind mount, run the container as the owner of the host directory.
COPY --from=build --chown=65532:65532 /out/certs /certs
# /var/spool/llmtap, where compose mounts the spool's named volume (PROXY_SPOOL_DIR): a new volume
# takes this directory's owner and mode, here sticky and writable by any user, since compose runs
# llmtap as the host user (LLMTAP_UID). llmtap keeps its files in it 0600. (The parent is copied,
# so the directory keeps its mode.)
COPY --from=build --chown=65532:65532 /out/spool/ /var/spool/
COPY addons-config /etc/llmtap/addons-config
USER 65532:65532
ENV PROXY_LISTEN=0.0.0.0:8080 \
    PROXY_CA_DIR=/certs \
    PROXY_ADDONS_CONFIG=/etc/llmtap/addons-config \
    OTEL_SERVICE_NAME=llmtap
VOLUME ["/certs"]
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 CMD ["llmtap", "healthcheck"]
ENTRYPOINT ["llmtap"]
