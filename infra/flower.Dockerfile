# The Flower image for both roles of a deployed federation: a site (`fedmm site`) or the SuperLink
# host (`fedmm superlink --pki`). fedmm's core, torch (CPU), flwr and Great Expectations from
# requirements-site.lock; no ZenML, MLflow, kfp or DVC. Build from the repository root:
#   docker build -f infra/flower.Dockerfile -t fedmm-flower:0.1.0 .
# BASE: any image with Python 3.11 and pip (e.g. a local debootstrap image where no registry is reachable).
# TORCH_INDEX: a package index holding the CPU build of the locked torch (its dependencies come from the lock).
# Behind a TLS-inspecting proxy, pass its CA bundle as a build secret (BuildKit):
#   DOCKER_BUILDKIT=1 docker build --secret id=pip_cert,src=/etc/ssl/certs/ca-certificates.crt ...
ARG BASE=python:3.11-slim
FROM ${BASE}

ARG TORCH_INDEX=https://download.pytorch.org/whl/cpu
ENV PYTHONDONTWRITEBYTECODE=1 PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONUNBUFFERED=1 \
    FEDMM_HOME=/var/lib/fedmm FLWR_HOME=/var/lib/fedmm/flwr FLWR_DISABLE_UPDATE_CHECK=1 \
    OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

WORKDIR /opt/fedmm
COPY requirements-site.lock pyproject.toml README.md ./
RUN --mount=type=secret,id=pip_cert \
    if [ -s /run/secrets/pip_cert ]; then export PIP_CERT=/run/secrets/pip_cert; fi \
 && python3 -m venv /opt/venv \
 && /opt/venv/bin/python -m pip install pip==26.3 \
 && grep -v '^torch==' requirements-site.lock > /tmp/lock-without-torch.txt \
 && /opt/venv/bin/python -m pip install --no-deps --index-url "$TORCH_INDEX" "$(grep '^torch==' requirements-site.lock)" \
 && /opt/venv/bin/python -m pip install -r /tmp/lock-without-torch.txt
ENV PATH=/opt/venv/bin:$PATH
COPY fedmm fedmm
RUN python -m pip install --no-deps --no-build-isolation . \
 && python -c "import fedmm.flower.client_app, fedmm.flower.server_app, fedmm.flower.executor"
RUN useradd --system --uid 10001 --home-dir /var/lib/fedmm --create-home fedmm
USER fedmm
# A site: docker run ... fedmm-flower:0.1.0 site --data /data/site.npz --partition-id 3 \
#   --superlink superlink.example.org:9092 --root-certificates /pki/ca.pem --auth-key /pki/site_3
# The SuperLink: docker run ... fedmm-flower:0.1.0 superlink --pki /pki --operator-bind 0.0.0.0
ENTRYPOINT ["fedmm"]
