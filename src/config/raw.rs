//! The YAML as written: serde structs that mirror SPEC section 2 one to one, unknown keys refused.
//! The only place that touches serde_yaml (it is archived; keep it swappable).
