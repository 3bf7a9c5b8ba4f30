# authbridge sidecar image (and the sandbox's image, target `sandbox`).
#
#   docker build -t authbridge .                                  # public bases (rust:1-bookworm,
#                                                                 # debian:bookworm-slim)
#   docker build --target sandbox -t authbridge-sandbox .         # the fake Entra ID + Exchange
#   docker build --build-arg BUILDER_IMAGE=… --build-arg RUNTIME_IMAGE=… …   # other/local bases
#
# The final image holds the binary, the CA bundle and nothing else of ours; it runs as UID/GID
# 10001, works with `--read-only`, keeps state_dir on the volume /var/lib/authbridge and reads
# its config from $AUTHBRIDGE_CONFIG (default /etc/authbridge/authbridge.yaml, mount it read-only).
#
# Crates: when deploy/vendor/ holds crates (`cargo vendor --locked deploy/vendor`, done by
# tests/packaging/docker.sh on machines without a public network path), the build uses only
# them and needs no network. Otherwise cargo fetches them from crates.io. We vendor rather than
# pass a CA bundle into the build: nothing about the build machine's network (a private CA, a
# proxy) has to reach the build, an image layer or its history.

ARG BUILDER_IMAGE=rust:1-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BUILDER_IMAGE} AS builder
WORKDIR /src
# Dependencies first, as their own layer: compiled against stub sources, so a change to our
# sources does not rebuild them.
COPY Cargo.toml Cargo.lock ./
COPY sandbox/Cargo.toml sandbox/
COPY deploy/vendor/ deploy/vendor/
RUN set -eu; \
    if [ -n "$(ls -A deploy/vendor | grep -v '^\.gitignore$' || true)" ]; then \
      mkdir -p .cargo; \
      printf '[source.crates-io]\nreplace-with = "vendored"\n[source.vendored]\ndirectory = "deploy/vendor"\n[net]\noffline = true\n' \
        >.cargo/config.toml; \
    fi; \
    mkdir -p src sandbox/src; \
    echo 'fn main() {}' >src/main.rs; touch src/lib.rs; \
    echo 'fn main() {}' >sandbox/src/main.rs; touch sandbox/src/lib.rs; \
    cargo build --release --locked -p authbridge -p authbridge-sandbox --bins; \
    rm -rf src sandbox/src
COPY src/ src/
COPY sandbox/src/ sandbox/src/
# The stubs' outputs are newer than the real sources' mtimes: touch so cargo rebuilds our crates.
RUN set -eu; \
    touch src/main.rs src/lib.rs sandbox/src/main.rs sandbox/src/lib.rs; \
    cargo build --release --locked -p authbridge -p authbridge-sandbox --bins; \
    mkdir -p /out/bin /out/etc/ssl/certs /out/state; \
    cp target/release/authbridge target/release/authbridge-sandbox /out/bin/; \
    cp /etc/ssl/certs/ca-certificates.crt /out/etc/ssl/certs/; \
    /out/bin/authbridge --version
# state_dir must be private (authbridge refuses a group/world-accessible one); debug info is not
# needed in the image (backtraces keep function names).
RUN set -eu; \
    strip --strip-debug /out/bin/authbridge /out/bin/authbridge-sandbox; \
    mkdir -p /out/state/authbridge/var/lib/authbridge /out/state/sandbox/var/lib/authbridge-sandbox; \
    chmod 0700 /out/state/authbridge/var/lib/authbridge /out/state/sandbox/var/lib/authbridge-sandbox

# The fake Entra ID + Exchange Online, for compose's `sandbox` profile and tests (never production).
FROM ${RUNTIME_IMAGE} AS sandbox
COPY --from=builder /out/bin/authbridge-sandbox /usr/local/bin/authbridge-sandbox
COPY --from=builder --chown=10001:10001 /out/state/sandbox/var/lib/ /var/lib/
USER 10001:10001
WORKDIR /var/lib/authbridge-sandbox
VOLUME ["/var/lib/authbridge-sandbox"]
ENTRYPOINT ["authbridge-sandbox"]
CMD ["serve", "--dir", "/var/lib/authbridge-sandbox"]

# The sidecar (default target: last stage).
FROM ${RUNTIME_IMAGE} AS authbridge
COPY --from=builder /out/etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=builder /out/bin/authbridge /usr/local/bin/authbridge
# state_dir: owned by the runtime user and private (0700: authbridge refuses anything wider), so
# a fresh named volume starts out right. Copied as a subdirectory so its mode comes along.
COPY --from=builder --chown=10001:10001 /out/state/authbridge/var/lib/ /var/lib/
ENV AUTHBRIDGE_CONFIG=/etc/authbridge/authbridge.yaml \
    AUTHBRIDGE_LOG_FORMAT=json
# Numeric, so Kubernetes' runAsNonRoot can verify it without a passwd entry.
USER 10001:10001
WORKDIR /var/lib/authbridge
VOLUME ["/var/lib/authbridge"]
# SMTP, IMAP, POP3 as in config/authbridge.example.yaml; 9925 is the admin listener (/healthz,
# /readyz, /metrics). Listeners on 0.0.0.0 need TLS or allow_plaintext_remote: a sidecar sharing
# the application's network namespace keeps them on 127.0.0.1.
EXPOSE 1587 1143 1110 9925
# No shell, no curl: the binary asks the admin listener's /healthz itself.
HEALTHCHECK --interval=30s --timeout=5s --start-period=10s --retries=3 CMD ["authbridge", "probe"]
# Exec form: authbridge is PID 1 and gets SIGTERM itself (stop accepting, drain, exit). Give it
# more than shutdown_grace_secs: `docker stop -t 30`, compose `stop_grace_period: 30s`.
STOPSIGNAL SIGTERM
ENTRYPOINT ["authbridge"]
CMD ["run"]
