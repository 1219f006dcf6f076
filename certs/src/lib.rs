//! Certificates for QUIC links between gbgate nodes.
//!
//! This crate will create the CA and node certificates (URI SAN
//! `urn:gb28181:<id>`), load them into rustls configs and read a peer's GB ID.
//! Links currently run over UDP and TCP only.
