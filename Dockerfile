# syntax=docker/dockerfile:1
# The operator image: a static build stage and a distroless, non-root runtime.
#
#   docker build -t registry.example.com/scanreport-operator:0.1.0 .
#
# The binary is the entrypoint; the Helm chart passes `run` and its flags as arguments.

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# Everything Cargo.toml names (src/, crates/, migrations/ embedded by sqlx, benches/, tests/) must be
# present for the manifest to load; .dockerignore keeps target/ and the rest out.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin scanreport-operator \
 && install -D -m 0755 target/release/scanreport-operator /out/scanreport-operator

# glibc and libgcc, no shell, no package manager; user and group 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/scanreport-operator /usr/local/bin/scanreport-operator
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/scanreport-operator"]
CMD ["run"]
