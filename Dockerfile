# tokenwarden: multi-stage build; the runtime image holds only the binary and CA roots.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tokenwarden

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/tokenwarden --create-home tokenwarden
COPY --from=build /src/target/release/tokenwarden /usr/local/bin/tokenwarden
COPY config/sidecar.yaml /etc/tokenwarden/config.yaml
USER 10001
WORKDIR /var/lib/tokenwarden
# 8080: proxy (loopback inside the pod by default); 9090: admin (health: GET /healthz)
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/tokenwarden"]
CMD ["run", "--config", "/etc/tokenwarden/config.yaml"]
