//! The router's VRRP module, version 1: speaks protocols [1], accepts [1].
router_core::router_module!(router_core::Role::Vrrp, "1", [1], [1]);
