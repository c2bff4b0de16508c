# Common tasks. `just --list` shows them.

# Run the test suite (builds the guest modules itself).
test:
    cargo test

# Build the guest modules to wasm32-wasip2 components under target/guests/.
guests:
    CARGO_TARGET_DIR=target/guests cargo build --release --target wasm32-wasip2 $(for d in guest-modules/*/; do grep -q cdylib $d/Cargo.toml && echo -p $(basename $d); done)

# Run an example script.
run script="examples/hello.ls":
    cargo run -p liveswap-cli -- run {{script}}

lint:
    cargo fmt --check
    cargo clippy --all-targets -- -D warnings
