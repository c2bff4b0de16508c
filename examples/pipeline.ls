# Three probes in a pipeline that keeps running: upgrade them from another
# terminal with `liveswap ctl` or `liveswap shell --connect`.
# Run: cargo run -p liveswap-cli -- run examples/pipeline.ls

Load SINK $GUESTS/probe_v1.wasm config "quiet"
Load FEED $GUESTS/probe_v1.wasm config "timer t 10; tick-send SINK; quiet"
Load CLOCK $GUESTS/probe_v1.wasm config "timer beat 1000; tick-publish beat; quiet"
Load WATCH $GUESTS/probe_v1.wasm config "sub CLOCK beat"
