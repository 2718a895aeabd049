# The shapesync proxy. Build: docker build -t shapesync . (see docker-compose.yml)
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --bin shapesync

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --user-group --home-dir /var/lib/shapesync shapesync \
    && mkdir -p /var/lib/shapesync && chown shapesync:shapesync /var/lib/shapesync
COPY --from=build /src/target/release/shapesync /usr/local/bin/shapesync
USER shapesync
ENV SHAPESYNC_HOST=0.0.0.0 SHAPESYNC_PORT=3000 SHAPESYNC_STORAGE_DIR=/var/lib/shapesync/storage
EXPOSE 3000
ENTRYPOINT ["shapesync"]
CMD ["serve"]
