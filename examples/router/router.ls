# The non-stop router (thesis chapter 5) upgraded live through the thesis'
# six transactions. `liveswap demo` runs this script with a monitor; it can
# also be run on its own:
#   liveswap monitor &            # listens on 127.0.0.1:9301
#   liveswap run examples/router/router.ls
# Variables (liveswap run --var NAME=VALUE): MONITOR, BEAT (ms between
# broadcasts), SETTLE (time between transactions), FLAP (route
# recomputations queued on IP before transaction 5), ABORT_BOUND.
# A trailing `# expect ...` says what the transaction must do (or, after
# `Shadow`, that the shadow is dropped); the demo checks it.

## Transaction 1: TIMER, then OSPF and IP loaded and started together
Load TIMER $GUESTS/timer_v1.wasm config "interval ${BEAT:-100}"
Syn_Load OSPF $GUESTS/ospf_v1.wasm grant udp ${MONITOR:-127.0.0.1:9301} config "monitor ${MONITOR:-127.0.0.1:9301}" IP $GUESTS/ip_v1.wasm grant udp ${MONITOR:-127.0.0.1:9301} config "monitor ${MONITOR:-127.0.0.1:9301}"  # expect committed
Wait ${SETTLE:-3s}

## Transaction 2: IP v1 -> v2; the relay numbers continue
Replace IP $GUESTS/ip_v2.wasm  # expect committed
Wait ${SETTLE:-3s}

## Transaction 3: OSPF v1 -> v2; messages that arrive during the swap are served by v2
Replace OSPF $GUESTS/ospf_v2.wasm  # expect committed
Wait ${SETTLE:-3s}

## Handing the host over: a fresh host on the same state directory takes the router over between two transactions, with every module's state, queue, timers and subscriptions; no relay number is lost
#! handoff
Wait ${SETTLE:-3s}

## Transaction 4: downgrade OSPF and IP to v1, add VRRP, start all three together
Syn_Upgrade OSPF $GUESTS/ospf_v1.wasm IP $GUESTS/ip_v1.wasm VRRP $GUESTS/vrrp_v1.wasm grant udp ${MONITOR:-127.0.0.1:9301} config "monitor ${MONITOR:-127.0.0.1:9301}"  # expect committed
Wait ${SETTLE:-3s}

## Transaction 5: a route flap gives IP v1 a backlog of real work; it cannot reach quiescence within the bound, so the group aborts and both keep running v1
Send IP route-flap "${FLAP:-40}"
SetTimer ${ABORT_BOUND:-2}
Syn_Replace OSPF $GUESTS/ospf_v2.wasm IP $GUESTS/ip_v2.wasm  # expect aborted naming IP
Wait ${SETTLE:-3s}

## Transaction 6: protocol v3 (timestamps); IP v3 alone is refused by the scope check, OSPF v3 accepts v1 and v3
Replace IP $GUESTS/ip_v3.wasm  # expect refused naming OSPF
SetTimer 10
Syn_Replace OSPF $GUESTS/ospf_v3.wasm IP $GUESTS/ip_v3.wasm  # expect committed
Wait ${SETTLE:-3s}

## A shadow run first: OSPF v4 runs beside v3 from its state, on a copy of every message v3 serves, its packets and messages captured, never sent. At the first protocol-1 relay (a VRRP heartbeat) it traps and is dropped, before it ever served: v3 goes on untouched
Shadow OSPF $GUESTS/ospf_v4.wasm  # expect dropped
Wait ${SETTLE:-3s}

## Transaction 7: without the shadow run, OSPF v4 is a bad release that traps on protocol-1 relays (VRRP's heartbeats). Within the probation window its first trap rolls it back to v3 by itself, and the heartbeat it trapped on is served by v3: no relay number is lost
SetProbation ${PROBATION:-5s}
Replace OSPF $GUESTS/ospf_v4.wasm  # expect committed then rolled-back
Wait ${SETTLE:-3s}
