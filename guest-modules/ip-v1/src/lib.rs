//! The router's IP module, version 1: speaks protocols [1], accepts [1].
router_core::router_module!(router_core::Role::Ip, "1", [1], [1]);
