# Multi-stage build: release binaries, then a minimal non-root runtime image.
FROM rust:1-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
# Declared bench targets must exist for cargo to read the manifest; they are not built.
COPY benches ./benches
RUN cargo build --release --locked --bins

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/rollguard /usr/local/bin/rollguard
COPY --from=build /src/target/release/kubectl-rollguard /usr/local/bin/kubectl-rollguard
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/rollguard"]
CMD ["run"]
