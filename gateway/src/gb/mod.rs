//! GB/T 28181 message bodies: MANSCDP XML in GB2312 or UTF-8, and the
//! splitting and reassembly of catalog and record answers. Pure functions, no I/O.

pub mod catalog;
pub mod charset;
pub mod manscdp;
pub mod mansrtsp;
pub mod ptz;
pub mod record;
