//! `PTZCmd`: the 8-byte front-end command of GB/T 28181 Annex A.3, written
//! as 16 hex digits in a `DeviceControl`.
//!
//! Byte 0 is `A5`; byte 1 is the version (high nibble, 0) and a check
//! nibble over bytes 0–1 (`F` for version 0); byte 2 the address's low
//! byte; byte 3 the instruction; bytes 4–5 its data (pan and tilt speed,
//! or a preset number in byte 5); byte 6 the zoom speed (high nibble) and
//! the address's high nibble; byte 7 the sum of bytes 0–6, modulo 256.

use std::fmt;

/// Instruction bits of a motion (byte 3, high bits clear).
const RIGHT: u8 = 0x01;
const LEFT: u8 = 0x02;
const DOWN: u8 = 0x04;
const UP: u8 = 0x08;
const ZOOM_IN: u8 = 0x10;
const ZOOM_OUT: u8 = 0x20;
/// Preset instructions (byte 5 is the preset number).
const SET_PRESET: u8 = 0x81;
const CALL_PRESET: u8 = 0x82;
const DELETE_PRESET: u8 = 0x83;

/// One PTZ command, checked: 8 bytes, `A5` first, a right check nibble and
/// checksum.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PtzCmd([u8; 8]);

/// Why a `PTZCmd` text was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PtzCmdError {
    /// Not 16 hex digits.
    #[error("PTZCmd must be 16 hex digits, got {0:?}")]
    NotHex(String),
    /// The first byte is not `A5`.
    #[error("PTZCmd must start with A5, got {0:02X}")]
    BadLead(u8),
    /// The version/check byte does not check.
    #[error(
        "PTZCmd byte 2 is {found:02X}; its low nibble must be {expected:X} for version {version}"
    )]
    BadCheckNibble {
        /// The byte as sent.
        found: u8,
        /// The check nibble it should carry.
        expected: u8,
        /// The version (high nibble).
        version: u8,
    },
    /// The last byte is not the sum of the others.
    #[error("PTZCmd checksum is {found:02X}, expected {expected:02X}")]
    BadChecksum {
        /// The byte as sent.
        found: u8,
        /// The sum of bytes 1–7, modulo 256.
        expected: u8,
    },
}

/// Which way a motion goes; each axis -1, 0 or +1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Motion {
    /// -1 left, +1 right.
    pub pan: i8,
    /// -1 down, +1 up.
    pub tilt: i8,
    /// -1 zoom out (wide), +1 zoom in (tele).
    pub zoom: i8,
}

/// What a [`PtzCmd`] asks, as far as a gateway needs to know.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PtzAction {
    /// Stop every motion.
    Stop,
    /// Move, with pan, tilt (0–255) and zoom (0–15) speeds.
    Move {
        /// Direction.
        motion: Motion,
        /// Pan speed.
        pan_speed: u8,
        /// Tilt speed.
        tilt_speed: u8,
        /// Zoom speed.
        zoom_speed: u8,
    },
    /// Store the current position as this preset.
    SetPreset(u8),
    /// Go to this preset.
    CallPreset(u8),
    /// Forget this preset.
    DeletePreset(u8),
    /// Focus, iris, cruise, scan, auxiliary switches: passed on as sent.
    Other(u8),
}

impl PtzCmd {
    /// The command for `action`, address 1 (what a channel of its own
    /// device answers to; platforms route by `DeviceID`, not by it).
    pub fn new(action: PtzAction) -> PtzCmd {
        let (op, d1, d2, zoom) = match action {
            PtzAction::Stop => (0, 0, 0, 0),
            PtzAction::Move {
                motion,
                pan_speed,
                tilt_speed,
                zoom_speed,
            } => {
                let mut op = 0;
                op |= match motion.pan.signum() {
                    1 => RIGHT,
                    -1 => LEFT,
                    _ => 0,
                };
                op |= match motion.tilt.signum() {
                    1 => UP,
                    -1 => DOWN,
                    _ => 0,
                };
                op |= match motion.zoom.signum() {
                    1 => ZOOM_IN,
                    -1 => ZOOM_OUT,
                    _ => 0,
                };
                (op, pan_speed, tilt_speed, zoom_speed.min(15))
            }
            PtzAction::SetPreset(n) => (SET_PRESET, 0, n, 0),
            PtzAction::CallPreset(n) => (CALL_PRESET, 0, n, 0),
            PtzAction::DeletePreset(n) => (DELETE_PRESET, 0, n, 0),
            PtzAction::Other(op) => (op, 0, 0, 0),
        };
        let mut b = [0xA5, 0x0F, 0x01, op, d1, d2, zoom << 4, 0];
        b[7] = checksum(&b);
        PtzCmd(b)
    }

    /// Reads 16 hex digits (either case, surrounding space ignored).
    pub fn parse(text: &str) -> Result<PtzCmd, PtzCmdError> {
        let t = text.trim();
        let not_hex = || PtzCmdError::NotHex(t.chars().take(32).collect());
        if t.len() != 16 || !t.is_ascii() {
            return Err(not_hex());
        }
        let mut b = [0u8; 8];
        for (i, byte) in b.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&t[2 * i..2 * i + 2], 16).map_err(|_| not_hex())?;
        }
        if b[0] != 0xA5 {
            return Err(PtzCmdError::BadLead(b[0]));
        }
        let version = b[1] >> 4;
        let expected = (0xA + 0x5 + version) & 0x0F;
        if b[1] & 0x0F != expected {
            return Err(PtzCmdError::BadCheckNibble {
                found: b[1],
                expected,
                version,
            });
        }
        let expected = checksum(&b);
        if b[7] != expected {
            return Err(PtzCmdError::BadChecksum {
                found: b[7],
                expected,
            });
        }
        Ok(PtzCmd(b))
    }

    /// The command's bytes.
    pub fn bytes(&self) -> [u8; 8] {
        self.0
    }

    /// What it asks.
    pub fn action(&self) -> PtzAction {
        let [_, _, _, op, d1, d2, d3, _] = self.0;
        match op {
            0 => PtzAction::Stop,
            SET_PRESET => PtzAction::SetPreset(d2),
            CALL_PRESET => PtzAction::CallPreset(d2),
            DELETE_PRESET => PtzAction::DeletePreset(d2),
            op if op & 0xC0 == 0 => {
                let axis = |plus: u8, minus: u8| -> i8 {
                    match (op & plus != 0, op & minus != 0) {
                        (true, false) => 1,
                        (false, true) => -1,
                        _ => 0,
                    }
                };
                PtzAction::Move {
                    motion: Motion {
                        pan: axis(RIGHT, LEFT),
                        tilt: axis(UP, DOWN),
                        zoom: axis(ZOOM_IN, ZOOM_OUT),
                    },
                    pan_speed: d1,
                    tilt_speed: d2,
                    zoom_speed: d3 >> 4,
                }
            }
            op => PtzAction::Other(op),
        }
    }
}

fn checksum(b: &[u8; 8]) -> u8 {
    b[..7].iter().fold(0u8, |s, x| s.wrapping_add(*x))
}

impl fmt::Display for PtzCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02X}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PtzCmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PtzCmd({self})")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn known_commands_from_the_protocol_reference() {
        assert_eq!(PtzCmd::new(PtzAction::Stop).to_string(), "A50F0100000000B5");
        let right = PtzAction::Move {
            motion: Motion {
                pan: 1,
                ..Motion::default()
            },
            pan_speed: 0x80,
            tilt_speed: 0,
            zoom_speed: 0,
        };
        assert_eq!(PtzCmd::new(right).to_string(), "A50F010180000036");
        assert_eq!(
            PtzCmd::new(PtzAction::CallPreset(3)).to_string(),
            "A50F01820003003A"
        );
        assert_eq!(
            PtzCmd::parse("a50f01820003003a").unwrap().action(),
            PtzAction::CallPreset(3)
        );
        assert_eq!(PtzCmd::parse(" A50F010180000036 ").unwrap().action(), right);
    }

    #[test]
    fn bad_commands_say_what_is_wrong() {
        assert!(matches!(PtzCmd::parse("A50F"), Err(PtzCmdError::NotHex(_))));
        assert!(matches!(
            PtzCmd::parse("A50F01000000ZZB5"),
            Err(PtzCmdError::NotHex(_))
        ));
        assert_eq!(
            PtzCmd::parse("B50F0100000000B5"),
            Err(PtzCmdError::BadLead(0xB5))
        );
        assert!(matches!(
            PtzCmd::parse("A5000100000000A6"),
            Err(PtzCmdError::BadCheckNibble { .. })
        ));
        assert_eq!(
            PtzCmd::parse("A50F0100000000B6"),
            Err(PtzCmdError::BadChecksum {
                found: 0xB6,
                expected: 0xB5
            })
        );
        // Multi-byte UTF-8 of the right byte length must not panic.
        assert!(PtzCmd::parse("ééééééééé").is_err());
    }

    proptest! {
        #[test]
        fn parse_never_panics(s in "\\PC{0,40}") {
            let _ = PtzCmd::parse(&s);
        }

        #[test]
        fn every_built_command_reads_back(
            pan in -1i8..=1, tilt in -1i8..=1, zoom in -1i8..=1,
            ps in any::<u8>(), ts in any::<u8>(), zs in 0u8..16, n in any::<u8>(), which in 0..4u8,
        ) {
            let action = match which {
                0 => PtzAction::Move { motion: Motion { pan, tilt, zoom }, pan_speed: ps, tilt_speed: ts, zoom_speed: zs },
                1 => PtzAction::SetPreset(n),
                2 => PtzAction::CallPreset(n),
                _ => PtzAction::DeletePreset(n),
            };
            let cmd = PtzCmd::new(action);
            let back = PtzCmd::parse(&cmd.to_string()).unwrap();
            prop_assert_eq!(back, cmd);
            let want = match action {
                PtzAction::Move { motion, .. } if motion == Motion::default() => PtzAction::Stop,
                a => a,
            };
            prop_assert_eq!(back.action(), want);
        }
    }
}
