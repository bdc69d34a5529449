# slabtrace's container image: one static binary on `scratch`.
#
# Two ways to get the binary, one final image:
#
#   podman build -t slabtrace .                        # builds it in the `build` stage (needs a
#                                                      # registry for RUST_IMAGE and crates.io)
#   cargo xtask image                                  # builds it on the host, then
#                                                      # --build-arg BINARY=prebuilt (no registry)
#
# BINARY names the stage the final image copies /slabtrace from; the builder skips the other
# one (podman/buildah and BuildKit build only the stages the target needs).
#
# The daemon runs as UID 0 with only CAP_BPF, CAP_PERFMON and CAP_SYSLOG (the DaemonSet drops
# ALL and adds those three; tests/tests/privileges.rs and tests/tests/image.rs check that they
# are enough). There is no USER: a non-root user cannot work, because a container runtime gives
# a non-root process no ambient capabilities (so no CAP_BPF), /proc/slabinfo is 0400 root, and
# the pins under /sys/fs/bpf and the CRI socket are root's.

ARG RUST_IMAGE=docker.io/library/rust:1-bookworm
ARG BINARY=build

# The binary built from source, for machines that can pull RUST_IMAGE.
FROM ${RUST_IMAGE} AS build
# protoc for the CRI protos; nightly's rust-src and bpf-linker 0.10.0 for the BPF programs,
# which slabtrace/build.rs builds (as `cargo xtask setup` installs them on a host).
RUN apt-get update \
 && apt-get install -y --no-install-recommends protobuf-compiler \
 && rm -rf /var/lib/apt/lists/*
RUN rustup toolchain install nightly --profile minimal --component rust-src \
 && cargo +nightly install bpf-linker@0.10.0 --locked
WORKDIR /src
COPY . .
# Static glibc (crt-static), symbols stripped, for the target only: with --target, build
# scripts (aya-build's, which builds the BPF object with flags of its own) stay dynamic.
RUN target="$(uname -m)-unknown-linux-gnu" \
 && RUSTFLAGS="-C target-feature=+crt-static -C strip=symbols" cargo build --release --locked \
      --package slabtrace --target "$target" --target-dir /target \
 && install -D "/target/$target/release/slabtrace" /slabtrace

# The binary `cargo xtask image` built on the host (the same flags as above), copied from
# target/image/slabtrace (the one file of target/ that .containerignore lets in).
FROM scratch AS prebuilt
COPY target/image/slabtrace /slabtrace

# `:-build` repeats ARG BINARY's default on purpose: podman 4.3 (buildah 1.28) decides which
# stages to skip expanding only --build-arg values, not a global ARG's default, so with a plain
# `FROM ${BINARY}` it skips `build` and then looks for an image named "build".
FROM ${BINARY:-build} AS binary

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="slabtrace" \
      org.opencontainers.image.description="Who allocated this node's kernel slab memory, per pod and cache, with eBPF" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=binary /slabtrace /usr/bin/slabtrace
# No USER: UID 0 with only the DaemonSet's capabilities (see the top of this file).
ENTRYPOINT ["/usr/bin/slabtrace"]
CMD ["daemon"]
