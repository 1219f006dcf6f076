//! Fuzzes the PTZCmd reader: no input panics, and whatever reads writes
//! back to the same command.
#![no_main]

use gbgate::gb::ptz::PtzCmd;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(cmd) = PtzCmd::parse(text) {
        let _ = cmd.action();
        assert_eq!(PtzCmd::parse(&cmd.to_string()), Ok(cmd));
    }
});
