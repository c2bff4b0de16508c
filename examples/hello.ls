# A publisher, two subscribers, and a live upgrade of one of them.
# Run: cargo run -p liveswap-cli -- run examples/hello.ls
# ($GUESTS is the folder of the guest modules built with liveswap.)

Load TICKER $GUESTS/probe_v1.wasm config "timer beat 300; tick-publish beat"
Load ALICE  $GUESTS/probe_v1.wasm config "sub TICKER beat"
Load BOB    $GUESTS/probe_v1.wasm config "sub TICKER beat; timer nudge 700; tick-send ALICE"
Wait 1s
Replace ALICE $GUESTS/probe_v2.wasm
Wait 1s
Send BOB do "unsub TICKER beat"
Wait 1s
Status
Versions
Quit
