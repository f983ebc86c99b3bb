# Python 3.11 on a Debian base made from Debian's packages: `python` on PATH and pip allowed into the
# system Python, as in the official python:3.11-slim (for machines that cannot pull it).
ARG DEBIAN_IMAGE=debian:bookworm-slim
FROM ${DEBIAN_IMAGE}
# hadolint ignore=DL3008
RUN apt-get update -qq \
 && apt-get install -y -qq --no-install-recommends python-is-python3 \
 && rm -f /usr/lib/python3.11/EXTERNALLY-MANAGED && rm -rf /var/lib/apt/lists/*
