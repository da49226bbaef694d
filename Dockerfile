# syntax=docker/dockerfile:1
# Build stage: the Rust toolchain.
FROM rust:1.95-slim-bookworm AS build
# CharLS (JPEG-LS decoding for transcoding) is C++ built with CMake from its crate.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends cmake g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin laminate-proxy

# Runtime stage: slim Debian with CA certificates only, as a non-root user.
FROM debian:bookworm-slim
# ca-certificates is deliberately not pinned: it must follow Debian's security
# updates, and a pinned version breaks the build once the archive drops it.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 laminate \
 && useradd --system --uid 10001 --gid 10001 --home-dir /data --shell /usr/sbin/nologin laminate \
 && mkdir -p /data && chown 10001:10001 /data
COPY --from=build /src/target/release/laminate-proxy /usr/local/bin/laminate-proxy
ENV LAMINATE_PROXY_DATA_DIR=/data \
    LAMINATE_PROXY_HTTP_ADDR=0.0.0.0:8080 \
    LAMINATE_PROXY_DICOM_ADDR=0.0.0.0:11112 \
    LAMINATE_PROXY_LOG_FORMAT=text
# Numeric, so the host and Kubernetes' runAsNonRoot can check it.
USER 10001:10001
VOLUME /data
EXPOSE 8080 11112
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 \
  CMD ["laminate-proxy", "healthcheck"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["laminate-proxy"]
CMD ["run"]
