//! The router's OSPF module, version 4: a bad release. It declares what
//! version 3 does (speaks [1], accepts [1,3]), so the scope check lets it
//! in, but it traps on the first protocol-1 relay it gets (VRRP's
//! heartbeats): the fault a probation window exists to catch.
router_core::router_module!(router_core::Role::Ospf, "4", [1], [1, 3], traps on protocol 1);
