//! The router's IP module, version 3: speaks protocol 3 (relay messages
//! carry a timestamp), accepts 1 (TIMER's broadcasts) and 3 (its own
//! route-recompute messages).
router_core::router_module!(router_core::Role::Ip, "3", [3], [1, 3]);
