//! Embeds the console's player library (mpegts.js, from the npm registry,
//! installed by `make deps` into `console/node_modules`, never committed).
//! Without it the binary still builds; the console then says the player
//! was not built in and how to get it.

use std::path::PathBuf;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let lib = manifest.join("../console/node_modules/mpegts.js/dist/mpegts.js");
    println!("cargo:rerun-if-changed={}", lib.display());
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("set by cargo")).join("mpegts.js");
    match std::fs::read(&lib) {
        Ok(bytes) => std::fs::write(&out, bytes).expect("write OUT_DIR/mpegts.js"),
        Err(_) => {
            println!(
                "cargo:warning=console/node_modules/mpegts.js is missing: the console will not play video; run `make deps`"
            );
            std::fs::write(
                &out,
                "// mpegts.js was not built in: run `make deps`, then build again.\n",
            )
            .expect("write OUT_DIR/mpegts.js");
        }
    }
}
