//! Turning exchanges into OTLP log records and shipping them.

pub mod attributes;
