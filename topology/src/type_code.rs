//! Digits 11–13 of an ID: what kind of thing it names.
//!
//! Ranges follow GB/T 28181-2016 Annex D (2022 additions included):
//! 111–130 front-end main devices, 131–199 peripherals, 200–299 platform
//! parts (215 business group, 216 virtual organisation), 300 central user,
//! 400 terminal user, 500–505 external application platforms, 600–999
//! extension. Everything else is reserved.

/// DVR.
pub const DVR: u16 = 111;
/// Video server.
pub const VIDEO_SERVER: u16 = 112;
/// Encoder.
pub const ENCODER: u16 = 113;
/// Decoder.
pub const DECODER: u16 = 114;
/// Alarm controller.
pub const ALARM_CONTROLLER: u16 = 117;
/// Network video recorder.
pub const NVR: u16 = 118;
/// Hybrid video recorder.
pub const HVR: u16 = 130;
/// Camera (a channel of an encoder, DVR or NVR).
pub const CAMERA: u16 = 131;
/// IP camera (registers as itself and is its own channel).
pub const IPC: u16 = 132;
/// Alarm input device.
pub const ALARM_INPUT: u16 = 134;
/// Central SIP server: a platform, including every gbgate node.
pub const PLATFORM: u16 = 200;
/// Business group (catalog tree node).
pub const BUSINESS_GROUP: u16 = 215;
/// Virtual organisation (catalog tree node).
pub const VIRTUAL_ORGANISATION: u16 = 216;

/// The class of a type code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TypeClass {
    /// 111–130: DVR, video server, encoder, decoder, matrix, alarm controller, NVR, HVR.
    FrontEndDevice,
    /// 131–199: camera, IPC, display, alarm in/out, voice in/out, mobile, other peripherals.
    Peripheral,
    /// 200–299 except 215 and 216: SIP server (200) and other platform parts.
    Platform,
    /// 215: business group.
    BusinessGroup,
    /// 216: virtual organisation.
    VirtualOrganisation,
    /// 300: central user.
    CentralUser,
    /// 400: terminal user.
    TerminalUser,
    /// 500–505: external application platform.
    ExternalPlatform,
    /// 600–999: extension.
    Extension,
    /// Any other code (000–110, 301–399, 401–499, 506–599).
    Reserved,
}

impl TypeClass {
    /// The class of `code`.
    pub fn of(code: u16) -> TypeClass {
        match code {
            111..=130 => TypeClass::FrontEndDevice,
            131..=199 => TypeClass::Peripheral,
            BUSINESS_GROUP => TypeClass::BusinessGroup,
            VIRTUAL_ORGANISATION => TypeClass::VirtualOrganisation,
            200..=299 => TypeClass::Platform,
            300 => TypeClass::CentralUser,
            400 => TypeClass::TerminalUser,
            500..=505 => TypeClass::ExternalPlatform,
            600..=999 => TypeClass::Extension,
            _ => TypeClass::Reserved,
        }
    }
}

/// Camera (131) or IPC (132): a video source people watch.
pub fn is_channel(code: u16) -> bool {
    code == CAMERA || code == IPC
}

/// A short English name of a type code, for messages and logs.
pub fn describe(code: u16) -> &'static str {
    match code {
        DVR => "DVR",
        VIDEO_SERVER => "video server",
        ENCODER => "encoder",
        DECODER => "decoder",
        115 => "video switching matrix",
        116 => "audio switching matrix",
        ALARM_CONTROLLER => "alarm controller",
        NVR => "NVR",
        HVR => "HVR",
        CAMERA => "camera",
        IPC => "IP camera",
        133 => "display",
        ALARM_INPUT => "alarm input",
        135 => "alarm output",
        136 => "voice input",
        137 => "voice output",
        138 => "mobile transmission device",
        139 => "other peripheral",
        PLATFORM => "central SIP server (platform)",
        201 => "web application server",
        202 => "media distribution server",
        203 => "proxy server",
        204 => "security server",
        205 => "alarm server",
        206 => "database server",
        207 => "GIS server",
        208 => "management server",
        209 => "access gateway",
        210 => "media storage server",
        211 => "signalling security gateway",
        BUSINESS_GROUP => "business group",
        VIRTUAL_ORGANISATION => "virtual organisation",
        300 => "central user",
        400 => "terminal user",
        _ => match TypeClass::of(code) {
            TypeClass::FrontEndDevice => "front-end device",
            TypeClass::Peripheral => "peripheral",
            TypeClass::Platform => "platform component",
            TypeClass::ExternalPlatform => "external application platform",
            TypeClass::Extension => "extension type",
            _ => "reserved type",
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classes_follow_the_table() {
        assert_eq!(TypeClass::of(110), TypeClass::Reserved);
        assert_eq!(TypeClass::of(111), TypeClass::FrontEndDevice);
        assert_eq!(TypeClass::of(130), TypeClass::FrontEndDevice);
        assert_eq!(TypeClass::of(131), TypeClass::Peripheral);
        assert_eq!(TypeClass::of(199), TypeClass::Peripheral);
        assert_eq!(TypeClass::of(200), TypeClass::Platform);
        assert_eq!(TypeClass::of(215), TypeClass::BusinessGroup);
        assert_eq!(TypeClass::of(216), TypeClass::VirtualOrganisation);
        assert_eq!(TypeClass::of(299), TypeClass::Platform);
        assert_eq!(TypeClass::of(300), TypeClass::CentralUser);
        assert_eq!(TypeClass::of(301), TypeClass::Reserved);
        assert_eq!(TypeClass::of(400), TypeClass::TerminalUser);
        assert_eq!(TypeClass::of(505), TypeClass::ExternalPlatform);
        assert_eq!(TypeClass::of(506), TypeClass::Reserved);
        assert_eq!(TypeClass::of(600), TypeClass::Extension);
        assert_eq!(TypeClass::of(999), TypeClass::Extension);
        assert_eq!(TypeClass::of(1000), TypeClass::Reserved);
    }

    #[test]
    fn channels_and_names() {
        assert!(is_channel(131) && is_channel(132));
        assert!(!is_channel(118) && !is_channel(200));
        assert_eq!(describe(118), "NVR");
        assert_eq!(describe(125), "front-end device");
        assert_eq!(describe(777), "extension type");
        assert_eq!(describe(42), "reserved type");
    }
}
