//! Host patterns of policy rules: names, `*.suffix`, `*`, IP literals and CIDRs, each with an optional port.
// SKELETON (helper A)
