//! Private and special address ranges that are never reached unless allowed.
// SKELETON (helper A)
