//! Namespaces and PEP node names of legacy OMEMO.

/// XEP-0384 v0.3 ("legacy OMEMO", `eu.siacs.conversations.axolotl`), as Conversations and Dino use it.
pub const AXOLOTL: &str = "eu.siacs.conversations.axolotl";
/// PEP node of the device list (item id `current`).
pub const DEVICELIST_NODE: &str = "eu.siacs.conversations.axolotl.devicelist";
/// Prefix of a device's bundle node; the device id follows directly.
pub const BUNDLES_NODE_PREFIX: &str = "eu.siacs.conversations.axolotl.bundles:";
/// Bundle node of one device.
pub fn bundle_node(device_id: u32) -> String {
    format!("{BUNDLES_NODE_PREFIX}{device_id}")
}
