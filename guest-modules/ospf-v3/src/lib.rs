//! The router's OSPF module, version 3: speaks protocols [1], accepts [1,3].
router_core::router_module!(router_core::Role::Ospf, "3", [1], [1, 3]);
