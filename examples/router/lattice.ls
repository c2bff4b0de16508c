# The non-stop router of router.ls spread over a lattice of three hosts,
# upgraded and moved live. `liveswap demo --lattice` runs it on host a (the
# demo's own process) with hosts b and c as `liveswap run` processes and a
# local nats-server with JetStream; every command here is asked of host a.
# A Move is run by the host that serves the module; an upgrade of modules
# other hosts serve is a group spanning hosts, coordinated by host a.
# A trailing `# expect ...` says what the transaction must do.

## Transaction 1: TIMER, then OSPF and IP loaded on host a and started together
Load TIMER $GUESTS/timer_v1.wasm config "interval ${BEAT:-100}"
Syn_Load OSPF $GUESTS/ospf_v1.wasm grant udp ${MONITOR:-127.0.0.1:9301} config "monitor ${MONITOR:-127.0.0.1:9301}" IP $GUESTS/ip_v1.wasm grant udp ${MONITOR:-127.0.0.1:9301} config "monitor ${MONITOR:-127.0.0.1:9301}"  # expect committed
Wait ${SETTLE:-3s}

## Spreading the router while it runs: IP moves to host b and OSPF to host c, each with its state, queue, timers and grants; TIMER's broadcasts and IP's relays follow them across hosts
Move IP b
Move OSPF c
Wait ${SETTLE:-3s}

## Transaction 2: IP v1 -> v2 on host b, a group coordinated by host a; the relay numbers continue
Replace IP $GUESTS/ip_v2.wasm  # expect committed
Wait ${SETTLE:-3s}

## Transaction 3: OSPF v1 -> v2 on host c
Replace OSPF $GUESTS/ospf_v2.wasm  # expect committed
Wait ${SETTLE:-3s}

## OSPF moves from host c to host b, then back to host a; no relay number is lost or doubled
Move OSPF b
Wait ${SETTLE:-3s}
Move OSPF a
Wait ${SETTLE:-3s}

## Transaction 4: OSPF (host a) and IP (host b) down to v1 and VRRP loaded on host a, started together: one group over two hosts
Syn_Upgrade OSPF $GUESTS/ospf_v1.wasm IP $GUESTS/ip_v1.wasm VRRP $GUESTS/vrrp_v1.wasm grant udp ${MONITOR:-127.0.0.1:9301} config "monitor ${MONITOR:-127.0.0.1:9301}"  # expect committed
Wait ${SETTLE:-3s}

## Transaction 5: a route flap gives IP on host b a backlog; it cannot reach quiescence within the bound, so the group aborts on both hosts and both keep running v1
Send IP route-flap "${FLAP:-40}"
SetTimer ${ABORT_BOUND:-2}
Syn_Replace OSPF $GUESTS/ospf_v2.wasm IP $GUESTS/ip_v2.wasm  # expect aborted naming IP
Wait ${SETTLE:-3s}

## OSPF moves to host c again
Move OSPF c
Wait ${SETTLE:-3s}

## Transaction 6: protocol v3; IP v3 alone is refused by the scope check, which sees that OSPF on host c accepts only v1; OSPF v3 (host c) and IP v3 (host b) together commit
Replace IP $GUESTS/ip_v3.wasm  # expect refused naming OSPF
SetTimer 10
Syn_Replace OSPF $GUESTS/ospf_v3.wasm IP $GUESTS/ip_v3.wasm  # expect committed
Wait ${SETTLE:-3s}
