# Stand-in for python:3.11-slim-bookworm where the image registry is out of reach (docker/ci/standins.sh builds
# it from a debootstrap of Debian bookworm). Only what the project's Dockerfile relies on: python3 with venv,
# `python` on the PATH, and the build machine's CA bundle so TLS (pip) works as it does on that machine.
ARG BASE_IMAGE
FROM ${BASE_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python-is-python3 ca-certificates \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin
COPY ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
ENV LANG=C.UTF-8
CMD ["python3"]
