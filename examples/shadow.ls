# Shadow runs: a new version proven on live traffic before it serves.
# Run: cargo run -p liveswap-cli -- run --once examples/shadow.ls
# ($GUESTS is the folder of the guest modules built with liveswap.)

Load auditor $GUESTS/probe_v1.wasm config "quiet"
Load SINK    $GUESTS/probe_v1.wasm config "quiet"
Load T       $GUESTS/probe_v1.wasm config "quiet; timer t 5; tick-send SINK"
Wait 1s

# Version 5 serves numbers as version 2 does, but also tells `auditor`
# about every `audit` message: a changed answer. As a shadow it starts from
# SINK's state and sees a copy of every message v1 serves; what it sends,
# publishes or logs is captured and compared, never delivered. The first
# `audit` drops it, with both versions' effects in the report.
Shadow SINK $GUESTS/probe_v5.wasm
Wait 500ms
Send SINK audit "check"
Wait 200ms
Status

# Version 2 answers alike: after a second of live traffic it takes over.
# Its state is already in step, so the pause moves no state.
Shadow SINK $GUESTS/probe_v2.wasm for 1s then promote
Wait 1500ms
History
