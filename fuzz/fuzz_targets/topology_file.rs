//! Fuzzes the topology and credentials file readers: no input panics, and a
//! topology that loads writes back to TOML that loads to the same topology.
#![no_main]

use libfuzzer_sys::fuzz_target;
use topology::{Credentials, Topology};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(topology) = Topology::parse(text, "fuzz/topology.toml") {
        let root = topology.root().id;
        for node in topology.nodes() {
            let path = topology.path_to_root(&node.id);
            assert_eq!(path.last().map(|n| n.id), Some(root));
            let _ = topology.children_of(&node.id).count();
        }
        if let Ok(written) = topology.to_toml_string() {
            let again = Topology::parse(&written, "fuzz/topology.toml");
            assert_eq!(again.ok().as_ref(), Some(&topology));
        }
    }
    let _ = Credentials::parse(text, "fuzz/credentials.toml");
});
