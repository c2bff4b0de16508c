# Faults: a trap recovered from the recovery point with its poison message
# set aside, then a bad release rolled back by itself during probation.
# Run: cargo run -p liveswap-cli -- run examples/faults.ls
# ($GUESTS is the folder of the guest modules built with liveswap.)

Load SINK $GUESTS/probe_v1.wasm config "quiet"
Load T    $GUESTS/probe_v1.wasm config "timer t 5; tick-send SINK"
Wait 1s

# A message that traps SINK: the instance is rebuilt from its recovery point
# (snapshot + messages logged since, replayed with their effects suppressed),
# the message is tried once more, traps again and is set aside.
Send SINK do "trap"
Wait 500ms
Poison SINK

# Version 4 traps on `audit` messages. Within the probation window, that
# trap rolls the group back to the versions it replaced, by itself.
SetProbation 10s
Syn_Replace SINK $GUESTS/probe_v4.wasm T $GUESTS/probe_v2.wasm
Wait 500ms
Send SINK audit "check"
Wait 500ms
Send SINK do "report"
Wait 200ms
Status
History
Quit
