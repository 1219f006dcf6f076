//! gbgate
