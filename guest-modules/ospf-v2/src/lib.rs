//! The router's OSPF module, version 2: speaks protocols [1], accepts [1].
router_core::router_module!(router_core::Role::Ospf, "2", [1], [1]);
